"""What every worker of a job's local Ray cluster runs first (``worker_process_setup_hook``).

A module of its own, importing nothing heavy: Ray imports the hook's module in *every* worker
process, Ray Data's own actors (stats, autoscaling coordinator, location tracker) included. Kept
in ``train.common`` it imported torch, Ray Train and Ray Data in each of them: five processes
importing torch at once on 2 cores took 6-8 s before a batch job's first actor could start
(bench/blur_batch.py).
"""

import logging


def quiet_without_dashboard() -> None:
    """Run in each worker of a local cluster (started without the dashboard, so without the
    State API): Ray Train's placement-group cleaner asks the State API once a second whether
    the training controller lives, and logs a warning each time it cannot. It cannot tell
    there, so the warnings say nothing; the local cluster, placement groups included, ends
    with the job's driver."""

    logging.getLogger(
        "ray.train.v2._internal.execution.controller.placement_group_cleaner"
    ).setLevel(logging.ERROR)
