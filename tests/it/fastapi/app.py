"""The Python service the quiet-by-design tests watch.

Shaped like python-ai-services: one FastAPI process hosting N logical agents,
each an asyncio task that writes its heartbeat to Redis every BEAT_EVERY
seconds (`SET {PREFIX}agent:{id}:last_seen <time.time()>`), a `/health` that
lists every agent's status, and a global exception handler.

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

import redis.asyncio as aioredis
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
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


class Agent:
    """One logical agent: a task that beats until it is stopped."""

    def __init__(self, agent_id: str, redis: aioredis.Redis):
        self.id = agent_id
        self.redis = redis
        self.task: asyncio.Task | None = None
        self.last_seen: float | None = None

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
            try:
                await self.beat()
            except (aioredis.RedisError, OSError) as e:
                # Redis paused or down: tried again at the next beat.
                log.warning("agent %s: heartbeat failed: %r", self.id, e)
            await asyncio.sleep(BEAT_EVERY)

    def start(self, beaten: bool = False) -> None:
        if not self.running:
            self.task = asyncio.create_task(self.run(beaten), name=f"agent:{self.id}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None


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


@app.exception_handler(Exception)
async def unhandled(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse(status_code=500, content={"detail": f"internal error: {exc!r}"})


@app.get("/health")
async def health() -> dict:
    return {
        "status": "ok",
        "agents": {
            a.id: {
                "status": "active" if a.running else "stopped",
                "last_seen": a.last_seen,
            }
            for a in agents.values()
        },
    }


def agent_named(agent_id: str) -> Agent:
    agent = agents.get(agent_id)
    if agent is None:
        raise HTTPException(status_code=404, detail=f"no agent {agent_id}")
    return agent


@app.post("/admin/agents/{agent_id}/stop")
async def stop_agent(agent_id: str) -> dict:
    agent = agent_named(agent_id)
    await agent.stop()
    return {"agent": agent_id, "status": "stopped"}


@app.post("/admin/agents/{agent_id}/start")
async def start_agent(agent_id: str) -> dict:
    """Starts the agent's task after writing its first heartbeat, and
    answers with that heartbeat's time."""
    agent = agent_named(agent_id)
    if agent.running:
        return {"agent": agent_id, "status": "active", "last_seen": agent.last_seen}
    first = await agent.beat()
    agent.start(beaten=True)
    return {"agent": agent_id, "status": "active", "last_seen": first}
