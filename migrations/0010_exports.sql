-- 0010: CSV exports of orders. An export is a job of kind 'orders.export' (its payload holds
-- the filters: {"from": "2026-11-01", "to": "2026-11-30"}); this table records who asked for
-- it and, once the job has written the file, what it wrote. Both rows are written in one
-- transaction (POST /v1/reports/orders-export), so a job never runs without its record.
--
-- The export's id is its job's id: GET /v1/jobs/7 shows the work, GET /v1/exports/7 serves
-- the file. ON DELETE CASCADE: when the job is purged (JOB_RETENTION_SECONDS), its record
-- goes with it, and the worker's next sweep deletes the file no record names (exports.py).
--
-- `file_name` is the file in EXPORT_DIR, one per attempt (export-7-2.csv: job 7, attempt 2):
-- written to a temporary name, renamed when complete, and recorded here only by the attempt
-- that still holds the job, so the file, its row count and its size always belong together.

CREATE TABLE exports (
    job_id BIGINT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    created_by BIGINT NOT NULL REFERENCES users (id),
    file_name TEXT CHECK (length(file_name) BETWEEN 1 AND 100),
    row_count BIGINT CHECK (row_count >= 0),
    byte_count BIGINT CHECK (byte_count >= 0),
    finished_at TEXT,
    -- Finished means all four are known; unfinished, none is.
    CHECK ((finished_at IS NULL) = (file_name IS NULL)),
    CHECK ((finished_at IS NULL) = (row_count IS NULL)),
    CHECK ((finished_at IS NULL) = (byte_count IS NULL))
);
