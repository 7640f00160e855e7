"""A FastAPI service with a DICOM C-STORE SCP on the same event loop.

The SCP starts and stops with the application's lifespan. Received instances are streamed to
disk as they arrive (``dicomio.stream_to_disk``), indexed in memory, and listed over HTTP.

Run it with ``uvicorn --factory docs.examples.fastapi_app:default_app`` (the SCP listens on $DICOM_PORT,
default 11112), then ``dicomio storescu 127.0.0.1 11112 some.dcm`` and GET /instances.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse

import dicomio
from dicomio import AE, evt
from dicomio.sop import STORAGE_SOP_CLASSES, Verification


def create_app(
    storage: Path, *, dicom_host: str = "127.0.0.1", dicom_port: int = 11112
) -> FastAPI:
    storage.mkdir(parents=True, exist_ok=True)
    instances: dict[str, dict[str, Any]] = {}

    @dicomio.stream_to_disk(storage)
    async def on_store(event: evt.Event) -> int:
        request = event.request
        assert event.dataset_path is not None
        uid = str(request.affected_sop_instance_uid)
        final = storage / f"{uid}.dcm"
        event.dataset_path.replace(final)  # the file is complete: move it into place
        instances[uid] = {
            "sop_instance_uid": uid,
            "sop_class_uid": str(request.affected_sop_class_uid),
            "calling_ae_title": event.assoc.remote_ae_title,
            "size": final.stat().st_size,
        }
        return 0x0000

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ae = AE("FASTAPI")
        ae.add_supported_context(Verification)
        for sop_class in STORAGE_SOP_CLASSES[:127]:
            ae.add_supported_context(sop_class)
        ae.accept_any_storage = True
        async with ae.start_server(
            (dicom_host, dicom_port), evt_handlers=[(evt.EVT_C_STORE, on_store)]
        ) as server:
            app.state.dicom_port = server.port
            yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/instances")
    async def list_instances() -> list[dict[str, Any]]:
        return sorted(instances.values(), key=lambda i: i["sop_instance_uid"])

    @app.get("/instances/{uid}")
    async def get_instance(uid: str) -> FileResponse:
        if uid not in instances:
            raise HTTPException(status_code=404, detail="no such instance")
        return FileResponse(storage / f"{uid}.dcm", media_type="application/dicom")

    return app


def default_app() -> FastAPI:
    """The app for ``uvicorn --factory docs.examples.fastapi_app:default_app``."""
    folder = Path(os.environ.get("DICOM_STORAGE", "./fastapi-dicom"))
    return create_app(folder, dicom_port=int(os.environ.get("DICOM_PORT", "11112")))
