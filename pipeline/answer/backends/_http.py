"""What the HTTP backends (Ollama, OpenAI-compatible) share: one httpx client with a
short connect timeout, and every transport or HTTP failure turned into
`BackendUnavailable` with the backend, the URL and what to do."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from pipeline.errors import BackendUnavailable

if TYPE_CHECKING:
    from pipeline.settings import Settings


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_client(settings: "Settings", base_url: str, headers: dict[str, str] | None = None) -> httpx.Client:
    """A client for `base_url`: read timeout `llm_timeout_s`, connect timeout
    `llm_connect_timeout_s`. Proxies from the environment are ignored for loopback URLs."""
    return httpx.Client(
        base_url=base_url,
        headers=headers or {},
        timeout=httpx.Timeout(settings.llm_timeout_s, connect=settings.llm_connect_timeout_s),
        trust_env=not is_loopback(base_url),
    )


def post_json(
    client: httpx.Client,
    path: str,
    body: dict,
    *,
    backend: str,
    hint: str,
    status_hints: dict[int, str] | None = None,
) -> dict:
    """POST `body` as JSON and return the decoded JSON object, or raise BackendUnavailable."""
    return request_json(client, "POST", path, body, backend=backend, hint=hint, status_hints=status_hints)


def request_json(
    client: httpx.Client,
    method: str,
    path: str,
    body: dict | None = None,
    *,
    backend: str,
    hint: str,
    status_hints: dict[int, str] | None = None,
) -> dict:
    url = str(client.base_url).rstrip("/") + "/" + path.lstrip("/")
    try:
        response = client.request(method, path.lstrip("/"), json=body)
    except httpx.TimeoutException as err:
        kind = "接続" if isinstance(err, httpx.ConnectTimeout) else "応答"
        raise BackendUnavailable(
            f"LLM バックエンド {backend!r} の{kind}がタイムアウトしました: {url}\n{hint}\n"
            "時間がかかる処理なら設定 llm_timeout_s を上げてください。"
        ) from err
    except httpx.TransportError as err:
        raise BackendUnavailable(
            f"LLM バックエンド {backend!r} に接続できません: {url} ({type(err).__name__}: {err})\n{hint}"
        ) from err
    if response.status_code >= 400:
        detail = response.text.strip().replace("\n", " ")[:300]
        extra = (status_hints or {}).get(response.status_code, hint)
        raise BackendUnavailable(
            f"LLM バックエンド {backend!r} がエラーを返しました: HTTP {response.status_code} {url}\n"
            f"{detail}\n{extra}"
        )
    try:
        data = response.json()
    except ValueError as err:
        raise BackendUnavailable(
            f"LLM バックエンド {backend!r} の応答が JSON ではありません: {url}\n"
            f"{response.text[:200]!r}\n{hint}"
        ) from err
    if not isinstance(data, dict):
        raise BackendUnavailable(f"LLM バックエンド {backend!r} の応答の形式が想定外です: {url}\n{hint}")
    return data


def malformed(backend: str, url: str, data: dict) -> BackendUnavailable:
    return BackendUnavailable(
        f"LLM バックエンド {backend!r} の応答の形式が想定外です: {url}\n{str(data)[:300]}"
    )
