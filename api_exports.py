"""Handlers for finished exports (admin): the CSV file a job wrote, downloaded.

    $ curl -i localhost:8000/v1/exports/7 -H "Authorization: Bearer $ADMIN_TOKEN"
    HTTP/1.1 200 OK
    Content-Type: text/csv; charset=utf-8
    Content-Disposition: attachment; filename="orders-2026-11-01-to-2026-11-30.csv"
    Content-Length: 1234

    order_id,created_at,status,...

An export that does not exist (or was deleted with its job) is a 404. One whose job has
not written it yet is a 409 with Retry-After, not a 404: the resource exists, it is not
ready, and a client polling for it should keep polling. The file is sent from disk a chunk
at a time (`FileBody`), never read whole, and its Content-Length is the size of the file
opened: the bytes sent are exactly the bytes the job wrote.
"""

import os

import exports
from schemas import describe
from web import Conflict, NotFound, Response

CHUNK_BYTES = 64 * 1024  # read from the file, and handed to the server, at a time
NOT_READY_RETRY_AFTER_SECONDS = 1


@describe(response={"type": "string", "description": "RFC 4180 CSV, a header line first"},
          media_type="text/csv", errors=(404, 409), response_headers=("Content-Disposition",))
def download_export(request):
    """GET /v1/exports/{id} (admin): the CSV file, as an attachment."""
    export_id = request.path_params["id"]
    export = exports.find_export(request.services.database, export_id)
    if export is None:
        raise NotFound(f"export {export_id} does not exist")
    if export["finished_at"] is None:
        raise Conflict(f"export {export_id} is not ready: its job is {export['status']}",
                       headers=[("Retry-After", str(NOT_READY_RETRY_AFTER_SECONDS))],
                       extra={"job_status": export["status"], "job": f"/v1/jobs/{export_id}"})
    try:
        # Opened now: a sweep or a rerun that replaces the file later cannot change what
        # this response sends (on POSIX an open file outlives its name).
        csv_file = open(request.services.settings.export_dir / export["file_name"], "rb")  # noqa: SIM115 - FileBody closes it
    except FileNotFoundError:
        # EXPORT_DIR not shared between the worker and this process, or emptied by hand.
        raise NotFound(f"the file of export {export_id} is not in the export directory") from None
    return Response(FileBody(csv_file), 200, [
        ("Content-Type", exports.CONTENT_TYPE),
        ("Content-Disposition", f'attachment; filename="{exports.download_name(export["payload"])}"'),
    ])


class FileBody:
    """A response body read from an open binary file, CHUNK_BYTES at a time.

    web.Application returns it to the server as the WSGI iterable (PEP 3333): the server
    sends each chunk as it comes and calls close() when done, or when the client went away.
    `len()` is the file's size when opened, for Content-Length.
    """

    def __init__(self, file):
        self.file = file
        self.length = os.fstat(file.fileno()).st_size

    def __len__(self):
        return self.length

    def __iter__(self):
        left = self.length  # never more than Content-Length promised
        while left > 0 and (chunk := self.file.read(min(CHUNK_BYTES, left))):
            left -= len(chunk)
            yield chunk

    def close(self):
        self.file.close()
