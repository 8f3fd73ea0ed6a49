-- 0013: the trace context of the request that enqueued a job (W3C Trace Context: tracing.py),
-- so that the job's log lines and the webhooks it sends carry the same trace id as that
-- request's access log line. Columns of their own rather than fields in the payload: the
-- payload is the handler's input, shown to admins as it was enqueued, and the trace is
-- the queue's business, like the job's attempts and its lease.
--
--   traceparent   "00-<trace-id>-<span id of the enqueuing request>-<flags>": the job's
--                 run is a child of that span; a retry (automatic or POST /v1/jobs/{id}/retry)
--                 keeps it, so every attempt of a job belongs to the trace that caused it
--   tracestate    the caller's vendor list, validated and at most 512 characters, or NULL
--
-- Expand only (docs/deploy.md): nullable, no default, so the previous release, whose INSERT
-- names its columns, goes on enqueueing jobs without a trace, and its workers ignore these.
-- A worker of this release gives such a job a new trace when it runs it.

ALTER TABLE jobs ADD COLUMN traceparent TEXT CHECK (length(traceparent) = 55);
ALTER TABLE jobs ADD COLUMN tracestate TEXT CHECK (length(tracestate) BETWEEN 1 AND 512);
