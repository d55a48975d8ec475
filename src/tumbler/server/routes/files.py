"""/v1/sandboxes/{id}/files: contents and tars travel as raw bodies, the rest as JSON.

Every path is a path inside the sandbox and must be absolute (400 otherwise); '..' is resolved
by the agent inside the sandbox's root, so it never leads out of it.
"""
from __future__ import annotations

from fastapi import APIRouter, Query, Request
from starlette.responses import Response, StreamingResponse

from tumbler import wire
from tumbler.models import FileInfo
from tumbler.server.routes import service

router = APIRouter(prefix="/v1/sandboxes/{sandbox_id}/files", tags=["files"])
PATH = Query(description="absolute path inside the sandbox")


@router.get("/content", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}})
async def read_file(sandbox_id: str, request: Request, path: str = PATH,
                    offset: int = Query(0, ge=0, description="bytes to skip"),
                    length: int | None = Query(None, ge=0, description="bytes to read; none: to the end")):
    """The file's bytes, exactly, streamed in chunks (a large file is never held whole)."""
    chunks = await service(request).read_file_chunks(sandbox_id, path, offset, length)
    return StreamingResponse(chunks, media_type="application/octet-stream")


@router.put("/content", response_model=wire.FileWriteResponse,
            openapi_extra={"requestBody": {"content": {"application/octet-stream": {}}}})
async def write_file(sandbox_id: str, request: Request, path: str = PATH,
                     mode: int | None = Query(None, ge=0, le=0o7777, description="permission bits"),
                     append: bool = Query(False)):
    """Write the request body to the file (parents are made)."""
    data = await request.body()
    size = await service(request).write_file(sandbox_id, path, data, mode, append)
    return wire.FileWriteResponse(size=size)


@router.get("/stat", response_model=FileInfo)
async def stat(sandbox_id: str, request: Request, path: str = PATH):
    return await service(request).stat(sandbox_id, path)


@router.get("/list", response_model=wire.FileList)
async def list_dir(sandbox_id: str, request: Request, path: str = PATH):
    return wire.FileList(entries=await service(request).list_dir(sandbox_id, path))


@router.delete("", status_code=204)
async def remove(sandbox_id: str, request: Request, path: str = PATH,
                 recursive: bool = Query(False, description="remove a directory and its contents")):
    await service(request).remove_file(sandbox_id, path, recursive)
    return Response(status_code=204)


@router.post("/chmod", response_model=wire.Ok)
async def chmod(sandbox_id: str, body: wire.ChmodRequest, request: Request):
    await service(request).chmod(sandbox_id, body.path, body.mode)
    return wire.Ok()


@router.post("/mkdir", response_model=wire.Ok)
async def mkdir(sandbox_id: str, body: wire.MkdirRequest, request: Request):
    await service(request).mkdir(sandbox_id, body.path, body.parents)
    return wire.Ok()


@router.put("/tar", response_model=wire.UploadResponse,
            openapi_extra={"requestBody": {"content": {"application/x-tar": {}}}})
async def upload_tar(sandbox_id: str, request: Request, path: str = PATH):
    """Unpack the tar in the body under `path` (a directory, made if missing)."""
    members = await service(request).upload_tar(sandbox_id, path, await request.body())
    return wire.UploadResponse(members=members)


@router.get("/tar", response_class=Response, responses={200: {"content": {"application/x-tar": {}}}})
async def download_tar(sandbox_id: str, request: Request, path: str = PATH):
    """The directory `path` as a tar, streamed (written on the sandbox's disk, read out in parts)."""
    chunks = await service(request).download_tar_chunks(sandbox_id, path)
    return StreamingResponse(chunks, media_type="application/x-tar")
