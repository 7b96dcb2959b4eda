"""Jobs for ``ray job submit``: Ray Train trainers and Ray Data pipelines."""
