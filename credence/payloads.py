"""Payload types of the signed envelopes, and the protocol's fixed bounds.

Every envelope names what it carries; a verifier states the type it expects,
so a signed answer can never be replayed as a query, nor a tree head as a
verdict.
"""

from __future__ import annotations

from datetime import timedelta

QUERY = "application/vnd.credence.query.v1+proto"
ANSWER = "application/vnd.credence.answer.v1+proto"
BATCH_QUERY = "application/vnd.credence.batch-query.v1+proto"
BATCH_ANSWER = "application/vnd.credence.batch-answer.v1+proto"
CONTEST = "application/vnd.credence.contest.v1+proto"
CONTEST_RECEIPT = "application/vnd.credence.contest-receipt.v1+proto"
CONTEST_RESOLUTION = "application/vnd.credence.contest-resolution.v1+proto"
SEALED_RECORDS = "application/vnd.credence.sealed-records.v1+proto"
RECOVERY_REQUEST = "application/vnd.credence.recovery-request.v1+proto"
RECOVERY_SHARE = "application/vnd.credence.recovery-share.v1+proto"
LOG_PROMISE = "application/vnd.credence.log-promise.v1+proto"
VERDICT = "application/vnd.credence.verdict.v1+proto"
VERDICT_BATCH = "application/vnd.credence.verdict-batch.v1+proto"
MANIFEST = "application/vnd.credence.manifest.v1+proto"
EXPLANATION = "application/vnd.credence.explanation.v1+proto"
REVIEW_NOTICE = "application/vnd.credence.review-notice.v1+proto"
REVIEW_OUTCOME = "application/vnd.credence.review-outcome.v1+proto"

#: A query is valid for at most this long after it is issued.
MAX_QUERY_LIFETIME = timedelta(minutes=5)
#: Allowance for clocks that disagree between registry and nodes.
CLOCK_SKEW = timedelta(seconds=60)
#: The longest merge delay a node accepts in a log promise.
MAX_MERGE_DELAY = timedelta(hours=24)
#: Most subjects in one batch message.
MAX_BATCH_ITEMS = 5000
