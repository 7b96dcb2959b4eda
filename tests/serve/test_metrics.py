"""The apps' own metrics on Ray's Prometheus endpoint, next to Serve's built-in ones: stage
latencies, rejected inputs by reason, shadow outcomes and agreement, drift windows and
statistics (the recommendation app here; the review queue's depth in the harmful-content
app's tests)."""

from __future__ import annotations

import pytest
from ray import serve

from apps.recommendation import RecommendationArgs, build_app
from tests.conftest import new_store
from tests.serve.http import api, scrape

pytestmark = [pytest.mark.serve, pytest.mark.slow]


@pytest.fixture(scope="module")
def app_url(serve_instance, rec_store, tmp_path_factory):

    args = RecommendationArgs(
        artifact_store=str(rec_store),
        events_log=new_store(tmp_path_factory.mktemp("metrics") / "events.sqlite"),
        shadow={"version": "v1", "share": 1.0},
        drift={"window": 10, "min_window": 5},
    )
    serve.run(build_app(args), name="rec_metrics", route_prefix="/rec-metrics")
    yield f"{serve_instance}/rec-metrics"
    serve.delete("rec_metrics")


def test_the_apps_metrics_are_scraped(app_url):
    for user in range(1, 21):
        assert api.get(f"{app_url}/users/{user}", params={"k": 5}, timeout=30).status_code == 200
    assert api.get(f"{app_url}/users/1", params={"k": 0}, timeout=30).status_code == 422
    assert api.get(f"{app_url}/users/1", params={"x": 1}, timeout=30).status_code == 422
    found = scrape(
        {
            "ray_mlsd_stage_latency_ms_bucket",
            "ray_mlsd_rejected_inputs_total",
            "ray_mlsd_shadow_outcomes_total",
            "ray_mlsd_shadow_agreement",
            "ray_mlsd_drift_windows_total",
            "ray_mlsd_drift_statistic",
            "ray_serve_num_http_requests_total",  # Serve's own, on the same endpoint
        },
        labels={
            "ray_mlsd_stage_latency_ms_bucket": ['stage="candidate_generation"', 'stage="ranking"'],
            "ray_mlsd_rejected_inputs_total": ['reason="invalid"'],
            "ray_mlsd_drift_statistic": ['application="rec_metrics"'],
        },
    )
    stages = " ".join(found["ray_mlsd_stage_latency_ms_bucket"])
    assert all(f'stage="{s}"' in stages for s in ("candidate_generation", "ranking"))
    assert any('reason="invalid"' in ln for ln in found["ray_mlsd_rejected_inputs_total"])
    assert any('application="rec_metrics"' in ln for ln in found["ray_mlsd_drift_statistic"])
