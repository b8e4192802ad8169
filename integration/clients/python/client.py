"""One MCP session through the gateway with the official Python SDK (`mcp` 2.x).

Usage: client.py URL TOKEN MODE [--task-id ID] [--text TEXT]

MODE is the SDK's own connect mode: `modern` (pinned to 2026-07-28, no probe), `legacy` (the
initialize handshake) or `auto` (probes `server/discover`, falls back to initialize). The script
lists the tools, calls `echo` and `whoami`, and prints one JSON line; any failure exits non-zero.
The JSON is ASCII-escaped, so the echo round trip does not depend on the terminal's encoding.
"""

import argparse
import asyncio
import importlib.metadata
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types.version import LATEST_MODERN_VERSION

# Astral-plane emoji, combining accent, CJK, right-to-left, a quote and a backslash: the text
# must come back byte for byte through the gateway, which never parses tool arguments.
DEFAULT_TEXT = 'h\u00e9llo w\u00f6rld \u2713 \u65e5\u672c\u8a9e \U0001F600 e\u0301 \u05e9\u05dc\u05d5\u05dd "q" \\'

MODES = {"modern": LATEST_MODERN_VERSION, "legacy": "legacy", "auto": "auto"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("token")
    p.add_argument("mode", choices=sorted(MODES))
    p.add_argument("--task-id", help="sent as Mcp-Task-Id on every request")
    p.add_argument("--text", default=DEFAULT_TEXT, help="the text to echo")
    return p.parse_args()


class Wire:
    """What went over HTTP: every exchange's method and status, and the session ids sent."""

    def __init__(self) -> None:
        self.exchanges: list[dict] = []
        self.sent_sessions: list[str] = []

    async def on_request(self, request: httpx2.Request) -> None:
        if sid := request.headers.get("mcp-session-id"):
            self.sent_sessions.append(sid)

    async def on_response(self, response: httpx2.Response) -> None:
        self.exchanges.append({"method": response.request.method, "status": response.status_code})


def tool_text(result) -> str:
    if result.is_error:
        raise RuntimeError(f"tool error: {result.content}")
    return result.content[0].text


async def run(args: argparse.Namespace) -> dict:
    wire = Wire()
    headers = {"Authorization": f"Bearer {args.token}"}
    if args.task_id:
        headers["Mcp-Task-Id"] = args.task_id
    http = httpx2.AsyncClient(
        headers=headers,
        timeout=httpx2.Timeout(30.0),
        event_hooks={"request": [wire.on_request], "response": [wire.on_response]},
    )
    async with http:
        # The transport closes the session with a DELETE when the client exits (legacy only).
        transport = streamable_http_client(args.url, http_client=http)
        async with Client(transport, mode=MODES[args.mode], read_timeout_seconds=30) as client:
            tools = await client.list_tools()
            echo = tool_text(await client.call_tool("echo", {"text": args.text}))
            whoami = json.loads(tool_text(await client.call_tool("whoami", {})))
            protocol_version = client.protocol_version
    if len(set(wire.sent_sessions)) > 1:
        raise RuntimeError(f"the client switched session ids mid-session: {wire.sent_sessions}")
    return {
        "sdk": "python mcp",
        "sdk_version": importlib.metadata.version("mcp"),
        "mode": args.mode,
        "protocol_version": protocol_version,
        "tools": sorted(t.name for t in tools.tools),
        "echo": echo,
        "whoami": whoami,
        "session_id": wire.sent_sessions[-1] if wire.sent_sessions else None,
        "exchanges": wire.exchanges,
    }


def main() -> int:
    args = parse_args()
    try:
        out = asyncio.run(run(args))
    except BaseException as e:  # noqa: BLE001 - anyio wraps failures in exception groups
        print(f"client.py ({args.mode}) failed: {e!r}", file=sys.stderr)
        for sub in getattr(e, "exceptions", ()):
            print(f"  caused by: {sub!r}", file=sys.stderr)
        return 1
    print(json.dumps(out, ensure_ascii=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
