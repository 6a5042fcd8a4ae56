"""Every limit the registry enforces, in one place.

- :mod:`~central_registry.limits.buckets`: token-bucket maths (pure).
- :mod:`~central_registry.limits.rate_store`: a bucket spent in the database,
  shared by every registry process.
- :mod:`~central_registry.limits.subject_usage`: distinct subjects per
  requester and day.
- :mod:`~central_registry.limits.lookup_quotas`: what a lookup spends before
  anything is written for it (request rate, log-row quotas) and the daily
  subject limit.
- :mod:`~central_registry.limits.request_shape`: the bounds of a lookup
  request's fields and of what a refusal writes.
- :mod:`~central_registry.limits.public`: the public port's rate limits and
  field bounds.
"""
