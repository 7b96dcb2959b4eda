"""The ingress's drift tap sends observations in batches, in order, and loses none: one call
per request cost the ingress and the monitor ~4 ms of CPU per answer. No Ray: the monitor's
handle is a recorder with the handle's ``observe.remote`` shape."""

import asyncio

from deployments.drift import DriftTap


class Sent:
    def __init__(self, batch):
        self.batch = batch

    def __await__(self):
        return asyncio.sleep(0).__await__()


class Monitor:
    """``observe.remote(batch)`` and ``report.remote()`` as a DeploymentHandle has them."""

    def __init__(self):
        self.calls: list[list[dict]] = []
        self.observe = self
        self.report = self._Report(self)

    def remote(self, batch):
        self.calls.append(batch)
        return Sent(batch)

    class _Report:
        def __init__(self, monitor):
            self.monitor = monitor

        async def remote(self):
            return {"observed": sum(len(c) for c in self.monitor.calls)}


def test_observations_go_in_batches_in_order_and_none_are_lost():
    async def run():
        m = Monitor()
        tap = DriftTap(m, batch=4, max_delay_s=0.05)
        for i in range(9):
            tap.observe(x=i)
        assert [len(c) for c in m.calls] == [4, 4]  # two full batches, one waiting
        await asyncio.sleep(0.2)  # the waiting one goes once its delay is up
        assert [len(c) for c in m.calls] == [4, 4, 1]
        assert [o["x"] for c in m.calls for o in c] == list(range(9))
        tap.observe(x=9)
        assert (await tap.report())["observed"] == 10  # a report sends what waits first
        await asyncio.sleep(0.1)
        assert len(m.calls) == 4  # the timer of the flushed batch was cancelled

    asyncio.run(run())


def test_off_a_loop_each_observation_is_sent_at_once():
    m = Monitor()
    tap = DriftTap(m, batch=64)
    tap.observe(x=1)
    assert m.calls == [[{"x": 1}]]


def test_monitoring_off_sends_nothing():
    tap = DriftTap(None, "off here")
    tap.observe(x=1)
    assert asyncio.run(tap.report()) == {"enabled": False, "reason": "off here"}
