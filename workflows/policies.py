"""Retry and timeout policy shared by every chain activity call of the workflows."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

# RPC and network errors retry with backoff for as long as it takes; only errors the
# activities classify as non-retryable (reverts, bad config) come back to the workflow.
CHAIN_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
)
# Every chain activity heartbeats each second: a killed worker's step is retried elsewhere
# after this, not after its whole start-to-close timeout.
HEARTBEAT_TIMEOUT = timedelta(seconds=3)
# A workflow task lost with its worker (SIGKILL mid-task) is handed to another worker after
# this, not after Temporal's default of 10 s. Tasks take milliseconds; the first one of a
# sandboxed workflow on a busy 2-core machine well under a second.
WORKFLOW_TASK_TIMEOUT = timedelta(seconds=3)
