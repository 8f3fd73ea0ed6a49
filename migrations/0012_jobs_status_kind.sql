-- 0012: GET /metrics counts the jobs of each status and kind at every scrape
-- (sql_jobs.count_jobs). With both columns in one index, that count reads the index alone
-- (an index-only scan, in status order, so GROUP BY needs no sort) and never the rows with
-- their payloads. The existing indexes each hold one of the two columns only.
--
-- Only an index: the previous release, still serving while this runs, never notices it.

CREATE INDEX jobs_status_kind ON jobs (status, kind);
