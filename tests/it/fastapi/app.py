"""The Python service the quiet-by-design tests watch.

Shaped like python-ai-services: one FastAPI process hosting N logical agents,
each an asyncio task that writes its heartbeat to Redis every BEAT_EVERY
seconds (`SET {PREFIX}agent:{id}:last_seen <time.time()>`), a `/health` that
lists every agent's status, and a global exception handler.

Admin endpoints (what the sidecar's remediation calls):
  POST /admin/agents/{id}/stop      the agent's task stops
  POST /admin/agents/{id}/start     one heartbeat at once, then the task beats
  POST /admin/agents/{id}/restart   depends on the agent's restart mode:
      fix   (default) cancels the task (stuck or not), writes one heartbeat,
            starts a fresh task: 200 {"agent", "status": "restarted", "last_seen"}
            (Redis failing: a 500 "restart failed: heartbeat: ...", and
            the fresh task started all the same)
      noop  200 {"agent", "status": "restarted"}, and nothing changes
      error 500 {"detail": "restart failed: ..."}
      hang  never answers, until the client goes away (uvicorn's graceful
            shutdown, on SIGTERM, waits for that too)
  GET  /admin/agents/{id}/status    {"agent", "running", "stuck", "last_seen",
                                    "restarts", "last_error", "restart_mode",
                                    "detail"} (+ "padding" if a size is set)
Every /admin call is recorded before it does anything (a hanging one too);
an unknown agent is a 404.

Test controls (what the tests call to make the failures):
  POST   /test/agents/{id}/stick        the task stays alive but stops beating
                                        (a beat already under way still lands);
                                        /health still says "active". 409 if
                                        the agent is not running.
  POST   /test/agents/{id}/restart_mode {"mode": "fix"|"noop"|"error"|"hang"}
  POST   /test/agents/{id}/report_size  {"bytes": N}: the status report gets a
                                        "padding" field of N characters
  POST   /test/health                   {"status": "ok"|"error"} and/or
                                        {"http_status": N}: what /health
                                        answers (default "ok" and 200)
  GET    /test/calls                    {"calls": [{"method", "path", "agent",
                                        "at", "body", "authorization"}, ...]}
  DELETE /test/calls                    forgets the recorded calls

Environment:
  AGENTS         comma-separated agent ids (required)
  REDIS_URL      redis://host:port (required)
  PREFIX         key prefix (default "")
  BEAT_EVERY     seconds between two heartbeats (default 0.5)
  REDIS_TIMEOUT  bound on one Redis command, seconds (default 1.0)
  STARTUP_DELAY  seconds the start-up takes before serving (default 0)

Run: python3 -m uvicorn app:app --app-dir tests/it/fastapi --port 8000
"""

import asyncio
import contextlib
import logging
import os
import time
from typing import Literal

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger("agents")

AGENTS = [a.strip() for a in os.environ["AGENTS"].split(",") if a.strip()]
REDIS_URL = os.environ["REDIS_URL"]
PREFIX = os.environ.get("PREFIX", "")
BEAT_EVERY = float(os.environ.get("BEAT_EVERY", "0.5"))
REDIS_TIMEOUT = float(os.environ.get("REDIS_TIMEOUT", "1.0"))
STARTUP_DELAY = float(os.environ.get("STARTUP_DELAY", "0"))


def key_of(agent_id: str) -> str:
    return f"{PREFIX}agent:{agent_id}:last_seen"


RestartMode = Literal["fix", "noop", "error", "hang"]


class Agent:
    """One logical agent: a task that beats until it is stopped, or that
    hangs (`stuck`: alive, not beating) until it is stopped."""

    def __init__(self, agent_id: str, redis: aioredis.Redis):
        self.id = agent_id
        self.redis = redis
        self.task: asyncio.Task | None = None
        self.last_seen: float | None = None
        # Set by the tests: the running task stops beating; a new task
        # (start, restart) beats again.
        self.stuck = False
        self.restarts = 0
        self.last_error: str | None = None
        # What `/admin/agents/{id}/restart` does.
        self.restart_mode: RestartMode = "fix"
        # Characters of padding in the status report (0: none).
        self.report_size = 0

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def beat(self) -> float:
        """One heartbeat. The time is taken before the write, as redis-py
        users do, so a write held up by Redis lands with that time."""
        now = time.time()
        await self.redis.set(key_of(self.id), repr(now))
        self.last_seen = now
        return now

    async def run(self, beaten: bool) -> None:
        """Beats every BEAT_EVERY seconds; the first one at once unless
        `beaten` (it has just been written)."""
        if beaten:
            await asyncio.sleep(BEAT_EVERY)
        while True:
            if self.stuck:
                # Alive and never beating again, until cancelled.
                await asyncio.Event().wait()
            try:
                await self.beat()
            except (aioredis.RedisError, OSError) as e:
                # Redis paused or down: tried again at the next beat.
                log.warning("agent %s: heartbeat failed: %r", self.id, e)
                self.last_error = f"heartbeat failed: {e!r}"
            await asyncio.sleep(BEAT_EVERY)

    def start(self, beaten: bool = False) -> None:
        if not self.running:
            self.task = asyncio.create_task(self.run(beaten), name=f"agent:{self.id}")

    async def stop(self) -> None:
        """Cancels the task, stuck or not; the next one is not stuck."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        self.stuck = False


agents: dict[str, Agent] = {}


@contextlib.asynccontextmanager
async def lifespan(_app: FastAPI):
    if STARTUP_DELAY > 0:
        # A slow boot: nothing answers on the port until this is over.
        await asyncio.sleep(STARTUP_DELAY)
    redis = aioredis.Redis.from_url(
        REDIS_URL,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
        # The agent's loop is the retry: one attempt per beat.
        retry=Retry(NoBackoff(), 0),
    )
    for agent_id in AGENTS:
        agents[agent_id] = Agent(agent_id, redis)
        agents[agent_id].start()
    try:
        yield
    finally:
        for agent in agents.values():
            await agent.stop()
        await redis.aclose()


app = FastAPI(lifespan=lifespan)

# What `/health` answers: its top-level "status" field and its status code.
health_status = "ok"
health_http_status = 200

# Every `/admin` call, in order: see `record_call`.
calls: list[dict] = []


@app.exception_handler(Exception)
async def unhandled(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse(status_code=500, content={"detail": f"internal error: {exc!r}"})


@app.get("/health")
async def health() -> JSONResponse:
    """Every agent whose task is alive is "active", stuck or not."""
    content = {
        "status": health_status,
        "agents": {
            a.id: {
                "status": "active" if a.running else "stopped",
                "last_seen": a.last_seen,
            }
            for a in agents.values()
        },
    }
    return JSONResponse(status_code=health_http_status, content=content)


def agent_named(agent_id: str) -> Agent:
    agent = agents.get(agent_id)
    if agent is None:
        raise HTTPException(status_code=404, detail=f"no agent {agent_id}")
    return agent


async def record_call(agent_id: str, request: Request) -> None:
    """Records an `/admin` call before its endpoint runs (so a call that
    hangs or fails is recorded too). The body may be empty or anything."""
    body = await request.body()
    calls.append(
        {
            "method": request.method,
            "path": request.url.path,
            "agent": agent_id,
            "at": time.time(),
            "body": body.decode("utf-8", errors="replace"),
            "authorization": request.headers.get("authorization"),
        }
    )


admin = APIRouter(
    prefix="/admin/agents/{agent_id}", dependencies=[Depends(record_call)]
)


@admin.post("/stop")
async def stop_agent(agent_id: str) -> dict:
    agent = agent_named(agent_id)
    await agent.stop()
    return {"agent": agent_id, "status": "stopped"}


@admin.post("/start")
async def start_agent(agent_id: str) -> dict:
    """Starts the agent's task after writing its first heartbeat, and
    answers with that heartbeat's time."""
    agent = agent_named(agent_id)
    if agent.running:
        return {"agent": agent_id, "status": "active", "last_seen": agent.last_seen}
    first = await agent.beat()
    agent.start(beaten=True)
    return {"agent": agent_id, "status": "active", "last_seen": first}


@admin.post("/restart")
async def restart_agent(agent_id: str, request: Request) -> dict:
    """Does what the agent's restart mode says (see the module docstring)."""
    agent = agent_named(agent_id)
    mode = agent.restart_mode
    if mode == "noop":
        return {"agent": agent_id, "status": "restarted"}
    if mode == "error":
        agent.last_error = "restart failed: injected by the test (mode error)"
        raise HTTPException(status_code=500, detail=agent.last_error)
    if mode == "hang":
        # The body has been read, so this returns only when the client goes
        # away (http.disconnect); then nothing is sent.
        while (await request.receive())["type"] != "http.disconnect":
            pass
        return {}
    await agent.stop()
    try:
        first = await agent.beat()
    except (aioredis.RedisError, OSError) as e:
        # The new task tries again at each beat.
        agent.start()
        agent.last_error = f"restart failed: heartbeat: {e!r}"
        raise HTTPException(status_code=500, detail=agent.last_error) from e
    agent.start(beaten=True)
    agent.restarts += 1
    return {"agent": agent_id, "status": "restarted", "last_seen": first}


@admin.get("/status")
async def agent_status(agent_id: str) -> dict:
    agent = agent_named(agent_id)
    stuck = agent.running and agent.stuck
    if agent.last_seen is None:
        ago = "no heartbeat yet"
    else:
        ago = f"last heartbeat {time.time() - agent.last_seen:.1f} s ago"
    state = "stuck" if stuck else "running" if agent.running else "stopped"
    report: dict = {
        "agent": agent_id,
        "running": agent.running,
        "stuck": stuck,
        "last_seen": agent.last_seen,
        "restarts": agent.restarts,
        "last_error": agent.last_error,
        "restart_mode": agent.restart_mode,
        "detail": f"agent {agent_id}: {state}, {ago}, {agent.restarts} restart(s)",
    }
    if agent.report_size > 0:
        report["padding"] = "x" * agent.report_size
    return report


app.include_router(admin)


# Test controls: how the tests make the failures the sidecar must see.


class RestartModeBody(BaseModel):
    mode: RestartMode


class ReportSizeBody(BaseModel):
    bytes: int = Field(ge=0)


class HealthBody(BaseModel):
    status: Literal["ok", "error"] | None = None
    http_status: int | None = Field(default=None, ge=100, le=599)


@app.post("/test/agents/{agent_id}/stick")
async def stick_agent(agent_id: str) -> dict:
    """The agent's task stays alive and stops beating."""
    agent = agent_named(agent_id)
    if not agent.running:
        raise HTTPException(status_code=409, detail=f"agent {agent_id} is not running")
    agent.stuck = True
    return {"agent": agent_id, "stuck": True}


@app.post("/test/agents/{agent_id}/restart_mode")
async def set_restart_mode(agent_id: str, body: RestartModeBody) -> dict:
    agent_named(agent_id).restart_mode = body.mode
    return {"agent": agent_id, "restart_mode": body.mode}


@app.post("/test/agents/{agent_id}/report_size")
async def set_report_size(agent_id: str, body: ReportSizeBody) -> dict:
    agent_named(agent_id).report_size = body.bytes
    return {"agent": agent_id, "report_size": body.bytes}


@app.post("/test/health")
async def set_health(body: HealthBody) -> dict:
    """Sets what `/health` answers; a field left out is kept."""
    global health_status, health_http_status
    if body.status is not None:
        health_status = body.status
    if body.http_status is not None:
        health_http_status = body.http_status
    return {"status": health_status, "http_status": health_http_status}


@app.get("/test/calls")
async def get_calls() -> dict:
    return {"calls": calls}


@app.delete("/test/calls")
async def clear_calls() -> dict:
    calls.clear()
    return {"calls": []}
