"""The asyncio layer: :class:`SodpClient` and :class:`StateRef`.

Everything about the protocol lives in :class:`~sodp.protocol.ClientProtocol`;
this module only moves bytes between it and a ``websockets`` connection, runs
the reconnect loop, calls the token provider, fires callbacks and resolves the
futures of pending calls. Three tasks per client:

* ``_run`` — connect, read messages, feed the protocol, reconnect with backoff;
* a writer per connection — drains ``protocol.data_to_send()`` in order;
* ``_run_async_callbacks`` — awaits async callbacks one at a time, in order,
  so a slow callback never stalls reading (and heartbeat echoes).

Pending async deliveries are bounded (``max_pending_callbacks``): once that
many wait, a further update for a (callback, key) that already has one waiting
replaces that waiting one's value (per-key conflation: the callback later gets
the newest value, with ``meta.skipped`` counting the updates it replaced); an
update for a (callback, key) with nothing waiting is still queued, so the
queue holds at most ``max_pending_callbacks`` plus one per (callback, key).
Async hook and ``on_error`` invocations beyond the bound are dropped (and
logged). The receive loop never waits for a callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import ssl as _ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast, overload

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from .backoff import Backoff
from .errors import (
    AuthError,
    CallTimeout,
    ConflictError,
    ConnectionLost,
    SodpError,
    UnsupportedError,
)
from .jwt import jwt_expiry, refresh_delay
from .protocol import (
    AuthRequired,
    CallFailed,
    CallSucceeded,
    ClientProtocol,
    ErrorReceived,
    Event,
    Ready,
    StateChanged,
    TokenRefreshed,
    WatchCallback,
    WatchGroup,
    WatchMeta,
    WatchSettled,
    check_idempotency_key,
)
from .values import FetchResult, HistoryPage, JsonValue, KeysPage, WriteResult

__all__ = [
    "SodpClient",
    "StateRef",
    "TokenProvider",
    "Transacted",
    "Transaction",
    "WatchHandle",
]

logger = logging.getLogger("sodp")

TokenProvider = Callable[[], str | Awaitable[str]]
Hook = Callable[[], Awaitable[None] | None]
ErrorHook = Callable[[SodpError], Awaitable[None] | None]

_SCHEMES = {"ws://": "ws://", "wss://": "wss://", "sodp://": "ws://", "sodps://": "wss://"}
_UNSET: Any = object()
_T = TypeVar("_T")


def _is_pattern(key: str) -> bool:
    return "*" in key


def _write_args(args: dict[str, Any], if_version: int | None, ttl: int | None) -> dict[str, Any]:
    """Add the optional extension fields to a write's *args*."""
    if if_version is not None:
        if isinstance(if_version, bool) or not isinstance(if_version, int) or if_version < 0:
            raise ValueError(f"if_version must be an integer >= 0, got {if_version!r}")
        args["if_version"] = if_version
    if ttl is not None:
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0:
            raise ValueError(f"ttl must be an integer >= 0 (milliseconds), got {ttl!r}")
        args["ttl_ms"] = ttl
    return args


@dataclasses.dataclass(frozen=True, slots=True)
class Transacted(Generic[_T]):
    """What :meth:`SodpClient.transact` returns: the value written, the
    version of that write and how many attempts it took (1 = no conflict)."""

    value: _T
    version: int
    attempts: int


def _normalize_url(url: str) -> str:
    for prefix, scheme in _SCHEMES.items():
        if url.startswith(prefix):
            return scheme + url[len(prefix) :]
    raise ValueError(f"unsupported URL {url!r}: use ws://, wss://, sodp:// or sodps://")


def _consume(fut: asyncio.Future[Any]) -> None:
    """Mark a future's exception as retrieved, so asyncio does not log it."""
    if not fut.cancelled():
        fut.exception()


def _discard(awaitable: Awaitable[Any]) -> None:
    """Drop an awaitable that will never be awaited, without a warning."""
    if inspect.iscoroutine(awaitable):
        awaitable.close()
    elif isinstance(awaitable, asyncio.Future):
        awaitable.cancel()


@dataclasses.dataclass(eq=False, slots=True)
class _Delivery:
    """One pending async invocation. ``callback`` is ``None`` for hooks and
    ``on_error``; ``awaitable`` is ``None`` once conflated (the callback is
    called again, with ``value``/``meta``, when its turn comes)."""

    callback: WatchCallback | None
    key: str
    value: JsonValue
    meta: WatchMeta | None
    awaitable: Awaitable[Any] | None


class SodpClient:
    """Async client for the State-Oriented Data Protocol.

    Construct it inside a running event loop; it connects in the background at
    once. ``await client.ready`` (or ``await client``) waits for the first
    successful connection and authentication; ``async with SodpClient(...) as
    client`` does the same and closes on exit.

    Reconnects with exponential backoff and jitter (``reconnect_delay`` doubling
    up to ``max_reconnect_delay``, see :mod:`sodp.backoff`). After a reconnect,
    keys with a known version are RESUMEd (missed deltas are replayed) and the
    others WATCHed again.

    ``token_provider`` (sync or async) supersedes ``token`` and is called on
    every connect; if it raises, the connection is retried with backoff. When
    the server advertises ``capabilities.token_refresh`` and the token has an
    ``exp``, the provider is also called shortly before expiry and the new token
    is sent in-band, so the session never drops.

    A 401 during the handshake is permanent: reconnecting stops, ``ready`` and
    pending calls raise :class:`~sodp.errors.AuthError`. ERROR frames and other
    protocol problems go to ``on_error`` (and the log), never to a call.

    ``max_pending_callbacks`` bounds the async callback invocations waiting
    to run; beyond it, updates of a key are conflated (see the module
    docstring and :attr:`skipped_updates`).

    Calls made while disconnected wait for the next session, at most
    ``max_pending_calls`` of them (default 1024; one more raises
    :class:`~sodp.errors.CallQueueFull` at once); ``call_timeout`` counts
    from the call, across reconnects. When the server advertises
    ``idempotency``, every write carries an idempotency key, and a write in
    flight when the connection drops is resent with the same key after the
    reconnect instead of failing: the server applies it once and the caller
    gets its RESULT (exactly-once writes; see :mod:`sodp.protocol`).

    ``ssl`` is the :class:`ssl.SSLContext` for ``wss://`` (default: the
    system's trusted CAs), e.g. ``ssl.create_default_context(cafile="ca.pem")``
    for a private CA. A certificate that does not verify is reported to
    ``on_error`` (and the log) as :class:`~sodp.errors.ConnectionLost` on each
    attempt; with ``reconnect=False`` it is what ``await client.ready`` raises.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        reconnect: bool = True,
        reconnect_delay: float = 1.0,
        max_reconnect_delay: float = 30.0,
        on_connect: Hook | None = None,
        on_disconnect: Hook | None = None,
        on_error: ErrorHook | None = None,
        call_timeout: float | None = 30.0,
        open_timeout: float | None = 10.0,
        ping_interval: float | None = 20.0,
        max_message_size: int | None = None,
        max_pending_callbacks: int = 1024,
        max_pending_calls: int = 1024,
        ssl: _ssl.SSLContext | None = None,
    ) -> None:
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "SodpClient must be created inside a running event loop "
                "(in an async function or under asyncio.run())"
            ) from None
        self._url = _normalize_url(url)
        if ssl is not None and not self._url.startswith("wss://"):
            raise ValueError(f"ssl= is for wss:// (or sodps://) URLs, not {url!r}")
        self._ssl = ssl
        # Why the last connection attempt failed, when that is worth telling
        # (an unverifiable certificate); None after a success.
        self._connect_error: SodpError | None = None
        self._token = token
        self._token_provider = token_provider
        self._reconnect = reconnect
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._on_error = on_error
        self._call_timeout = call_timeout
        self._open_timeout = open_timeout
        self._ping_interval = ping_interval
        self._max_message_size = max_message_size

        # The clock and sleep of every time-dependent decision (reconnect
        # backoff, token refresh): replaceable, so tests need not wait for real.
        self._now: Callable[[], float] = time.time
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        if max_pending_calls < 1:
            raise ValueError("max_pending_calls must be at least 1")
        self._protocol = ClientProtocol(max_queued_calls=max_pending_calls)
        self._backoff = Backoff(reconnect_delay, max_reconnect_delay)
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._ready.add_done_callback(_consume)
        self._futures: dict[str, asyncio.Future[JsonValue]] = {}
        self._groups: dict[WatchGroup, asyncio.Future[None]] = {}  # unsettled watch_many
        self._closed = False
        self._fatal: SodpError | None = None
        self._ws: ClientConnection | None = None
        self._wakeup = asyncio.Event()
        self._session_token: str | None = None  # the token the live session uses
        if max_pending_callbacks < 1:
            raise ValueError("max_pending_callbacks must be at least 1")
        self._max_pending = max_pending_callbacks
        self._pending: deque[_Delivery] = deque()
        # the last waiting delivery per (id(callback), key): where conflation lands
        self._pending_slots: dict[tuple[int, str], _Delivery] = {}
        self._pending_wakeup = asyncio.Event()
        self._skipped_updates = 0
        self._dropped_callbacks = 0
        self._callback_task = self._loop.create_task(
            self._run_async_callbacks(), name="sodp-callbacks"
        )
        self._task = self._loop.create_task(self._run(), name="sodp-client")

    # ── readiness and lifetime ────────────────────────────────────────────────

    @property
    def ready(self) -> Awaitable[None]:
        """Resolves once connected and authenticated; raises AuthError on refusal."""
        return asyncio.shield(self._ready)

    def __await__(self) -> Generator[Any, None, Self]:
        return self._wait_ready().__await__()

    async def _wait_ready(self) -> Self:
        await asyncio.shield(self._ready)
        return self

    async def __aenter__(self) -> Self:
        try:
            await self._wait_ready()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def capabilities(self) -> dict[str, JsonValue]:
        """The ``capabilities`` of the server's last HELLO (empty before the first)."""
        return self._protocol.capabilities

    @property
    def connected(self) -> bool:
        """True while a session is live (connected and authenticated)."""
        return self._protocol.ready

    def close(self) -> None:
        """Close the connection and stop reconnecting (returns at once)."""
        if self._closed:
            return
        self._closed = True
        self._fail_everything(ConnectionLost("client closed"))
        self._task.cancel()
        self._callback_task.cancel()
        self._drop_pending()

    async def aclose(self) -> None:
        """Close with a proper WebSocket close handshake, and wait until done."""
        if not self._closed:
            self._closed = True
            self._fail_everything(ConnectionLost("client closed"))
            ws = self._ws
            if ws is not None:
                with contextlib.suppress(Exception):  # already broken: nothing to close
                    await ws.close()
        self._task.cancel()
        self._callback_task.cancel()
        for task in (self._task, self._callback_task):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._drop_pending()

    def _fail_everything(self, exc: SodpError) -> None:
        if not self._ready.done():
            self._ready.set_exception(exc)
        self._protocol.drop_queued_calls()
        for fut in self._futures.values():
            if not fut.done():
                fut.set_exception(exc)
        self._futures.clear()
        for done in self._groups.values():
            if not done.done():
                done.set_exception(exc)
        self._groups.clear()

    # ── connection loop ───────────────────────────────────────────────────────

    async def _run(self) -> None:
        while not self._closed and self._fatal is None:
            try:
                await self._connect_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("[SODP] unexpected error in the connection loop")
            if self._closed or self._fatal is not None:
                break
            if not self._reconnect:
                why = self._connect_error or ConnectionLost("disconnected (reconnect=False)")
                self._fail_everything(why)
                self._closed = True
                break
            delay = self._backoff.next_delay()
            logger.debug("[SODP] reconnecting in %.2fs (attempt %d)", delay, self._backoff.attempts)
            await self._sleep(delay)

    async def _connect_once(self) -> None:
        # Passed only when given: websockets picks the default context for
        # wss:// when ``ssl`` is absent, not when it is None.
        tls: dict[str, Any] = {} if self._ssl is None else {"ssl": self._ssl}
        try:
            ws = await connect(
                self._url,
                open_timeout=self._open_timeout,
                ping_interval=self._ping_interval,
                ping_timeout=self._ping_interval,
                max_size=self._max_message_size,
                compression=None,
                **tls,
            )
        except _ssl.SSLCertVerificationError as exc:
            self._connect_error = ConnectionLost(
                f"cannot connect to {self._url}: TLS certificate verification failed "
                f"({exc.verify_message or exc})"
            )
            self._report(self._connect_error)
            return
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            logger.debug("[SODP] connect to %s failed: %s", self._url, exc)
            return
        except InvalidURI as exc:
            self._give_up(ConnectionLost(f"invalid URL: {exc}"))
            return
        self._ws = ws
        self._connect_error = None
        self._protocol.connection_made()
        self._session_token = None
        tasks: dict[str, asyncio.Task[None]] = {}
        was_ready = False
        writer = asyncio.create_task(self._writer(ws), name="sodp-writer")
        try:
            async for message in ws:
                if isinstance(message, str):
                    logger.warning("[SODP] ignoring a text message from the server")
                    continue
                for event in self._protocol.receive_data(message):
                    if isinstance(event, Ready):
                        was_ready = True
                    self._handle(event, tasks)
                self._wakeup.set()
                if self._fatal is not None:
                    break
        except ConnectionClosed as exc:
            logger.debug("[SODP] connection closed: %s", exc)
        finally:
            for task in (writer, *tasks.values()):
                task.cancel()
            self._ws = None
            for cid in self._protocol.connection_lost():
                fut = self._futures.pop(cid, None)
                if fut is not None and not fut.done():
                    fut.set_exception(ConnectionLost("connection lost before the RESULT arrived"))
            try:
                with contextlib.suppress(Exception):  # closing a broken connection
                    await asyncio.shield(ws.close())
            finally:
                # Also when cancelled mid-close (close() then the loop ends):
                # never leave the socket to the garbage collector.
                ws.transport.abort()
            if was_ready:
                self._fire_hook(self._on_disconnect)

    async def _writer(self, ws: ClientConnection) -> None:
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                for data in self._protocol.data_to_send():
                    await ws.send(data)
        except ConnectionClosed:
            pass  # the reader sees it too and ends the connection

    def _handle(self, event: Event, tasks: dict[str, asyncio.Task[None]]) -> None:
        if isinstance(event, StateChanged):
            self._dispatch(event)
        elif isinstance(event, CallSucceeded):
            fut = self._futures.pop(event.call_id, None)
            if fut is not None and not fut.done():
                fut.set_result(event.data)
        elif isinstance(event, CallFailed):
            fut = self._futures.pop(event.call_id, None)
            if fut is not None and not fut.done():
                fut.set_exception(event.error)
        elif isinstance(event, AuthRequired):
            tasks["auth"] = asyncio.create_task(self._authenticate(), name="sodp-auth")
        elif isinstance(event, Ready):
            self._backoff.reset()
            if not self._ready.done():
                self._ready.set_result(None)
            logger.debug("[SODP] connected to %s (sub=%s)", self._url, event.sub)
            self._schedule_refresh(tasks)
            self._fire_hook(self._on_connect)
        elif isinstance(event, TokenRefreshed):
            logger.debug("[SODP] token refreshed in-band (sub=%s)", event.sub)
            self._schedule_refresh(tasks)
        elif isinstance(event, WatchSettled):
            self._settle(event)
        elif isinstance(event, ErrorReceived):
            self._report(event.error)
            if event.fatal:
                self._give_up(event.error)

    def _settle(self, event: WatchSettled) -> None:
        done = self._groups.pop(event.group, None)
        if done is None or done.done():
            return
        if event.error is None:
            done.set_result(None)
        else:
            done.set_exception(event.error)

    def _give_up(self, exc: SodpError) -> None:
        """A permanent failure: stop reconnecting and fail everything waiting."""
        self._fatal = exc
        self._fail_everything(exc)

    # ── authentication ────────────────────────────────────────────────────────

    async def _fetch_token(self) -> str | None:
        if self._token_provider is None:
            return self._token
        result = self._token_provider()
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, str):
            raise TypeError(f"token_provider returned {type(result).__name__}, not str")
        return result

    async def _authenticate(self) -> None:
        try:
            token = await self._fetch_token()
        except Exception as exc:
            # Not fatal: the provider may be briefly unavailable. Drop this
            # connection; the reconnect loop retries with backoff.
            logger.warning("[SODP] token_provider failed, retrying with backoff: %r", exc)
            if self._ws is not None:
                await self._ws.close()
            return
        if not token:
            err = AuthError("the server requires a token and none was given")
            self._report(err)
            self._give_up(err)
            if self._ws is not None:
                await self._ws.close()
            return
        self._session_token = token
        self._protocol.authenticate(token)
        self._wakeup.set()

    def _schedule_refresh(self, tasks: dict[str, asyncio.Task[None]]) -> None:
        if (
            self._token_provider is None
            or self._session_token is None
            or not self._protocol.capabilities.get("token_refresh")
        ):
            return
        exp = jwt_expiry(self._session_token)
        if exp is None:
            return
        old = tasks.get("refresh")
        if old is not None and old is not asyncio.current_task():
            old.cancel()
        tasks["refresh"] = asyncio.create_task(self._refresh(exp), name="sodp-refresh")

    async def _refresh(self, exp: float) -> None:
        """Fetch a newer token shortly before *exp* and send it in-band."""
        await self._sleep(refresh_delay(exp, self._now()))
        retry = Backoff(0.25, 5.0)
        while True:
            try:
                token = await self._fetch_token()
            except Exception as exc:
                logger.warning("[SODP] token_provider failed during refresh: %r", exc)
                token = None
            if token:
                new_exp = jwt_expiry(token)
                if new_exp is None or new_exp > exp:
                    self._session_token = token
                    self._protocol.authenticate(token)
                    self._wakeup.set()
                    return
            remaining = exp - self._now()
            if remaining <= 0:
                return  # too late: the server closes the session and we reconnect
            await self._sleep(min(retry.next_delay(), remaining))

    # ── callbacks ─────────────────────────────────────────────────────────────

    @property
    def skipped_updates(self) -> int:
        """Updates never delivered to a slow async callback because a newer
        value of the same key replaced them (see ``max_pending_callbacks``)."""
        return self._skipped_updates

    def _dispatch(self, event: StateChanged) -> None:
        for cb in event.callbacks:
            slot = (id(cb), event.key)
            waiting = self._pending_slots.get(slot)
            if waiting is not None and len(self._pending) >= self._max_pending:
                self._conflate(waiting, event)
                continue
            try:
                result = cb(event.value, event.meta)
            except Exception:
                logger.exception("[SODP] watch callback for %r raised", event.key)
                continue
            if inspect.isawaitable(result):
                delivery = _Delivery(cb, event.key, event.value, event.meta, result)
                self._pending.append(delivery)
                self._pending_slots[slot] = delivery
                self._pending_wakeup.set()

    def _conflate(self, waiting: _Delivery, event: StateChanged) -> None:
        """Replace a waiting delivery's value with *event*'s, newer one."""
        if waiting.awaitable is not None:
            _discard(waiting.awaitable)
            waiting.awaitable = None
        skipped = (waiting.meta.skipped if waiting.meta is not None else 0) + 1
        waiting.value = event.value
        waiting.meta = dataclasses.replace(event.meta, skipped=skipped)
        self._skipped_updates += 1

    def _enqueue_hook(self, result: Awaitable[Any], what: str) -> None:
        if len(self._pending) >= self._max_pending:
            _discard(result)
            self._dropped_callbacks += 1
            logger.warning(
                "[SODP] %d async callbacks pending: dropped an async %s call",
                len(self._pending),
                what,
            )
            return
        self._pending.append(_Delivery(None, "", None, None, result))
        self._pending_wakeup.set()

    def _fire_hook(self, hook: Hook | None) -> None:
        if hook is None:
            return
        name = getattr(hook, "__name__", "hook")
        try:
            result = hook()
        except Exception:
            logger.exception("[SODP] %s hook raised", name)
            return
        if inspect.isawaitable(result):
            self._enqueue_hook(result, name)

    def _report(self, exc: SodpError) -> None:
        logger.warning("[SODP] %s", exc)
        if self._on_error is None:
            return
        try:
            result = self._on_error(exc)
        except Exception:
            logger.exception("[SODP] on_error raised")
            return
        if inspect.isawaitable(result):
            self._enqueue_hook(result, "on_error")

    async def _run_async_callbacks(self) -> None:
        while True:
            while not self._pending:
                self._pending_wakeup.clear()
                await self._pending_wakeup.wait()
            delivery = self._pending.popleft()
            cb = delivery.callback
            if cb is not None and self._pending_slots.get((id(cb), delivery.key)) is delivery:
                del self._pending_slots[(id(cb), delivery.key)]
            awaitable = delivery.awaitable
            try:
                if awaitable is None and cb is not None and delivery.meta is not None:
                    # conflated: call again with the newest value
                    result = cb(delivery.value, delivery.meta)
                    awaitable = result if inspect.isawaitable(result) else None
                if awaitable is not None:
                    await awaitable
            except Exception:
                logger.exception("[SODP] async callback for %r raised", delivery.key)

    def _drop_pending(self) -> None:
        for delivery in self._pending:
            if delivery.awaitable is not None:
                _discard(delivery.awaitable)
        self._pending.clear()
        self._pending_slots.clear()

    # ── subscriptions ─────────────────────────────────────────────────────────

    def watch(
        self, key: str, callback: WatchCallback, *, params: dict[str, Any] | None = None
    ) -> Callable[[], None]:
        """Subscribe to *key*; ``callback(value, meta)`` fires on every update.

        Fires at once (``meta.source == "cache"``) if the key is already known.
        The callback may be a plain or an async function. Several ``watch()``
        calls for one key share one server subscription; *params* is sent with
        the first. Returns a function that removes only this callback (the
        subscription stays until :meth:`unwatch`).

        *key* may be a pattern when the server advertises ``prefix_watch``:
        ``"game.players.*"`` (every key below ``game.players``) or ``"*"``
        (every key). The value is then a map from full key to value, kept up
        to date as keys are added, changed and deleted. Raises
        :class:`~sodp.errors.UnsupportedError` (sending nothing) if the
        server does not advertise it, or if no HELLO has arrived yet
        (``await client.ready`` first).
        """
        if _is_pattern(key):
            self._require("prefix_watch", f"watching the pattern {key!r}")
        reg, cached = self._protocol.watch(key, callback, params)
        self._wakeup.set()
        if cached is not None:
            self._dispatch(cached)

        def unsub() -> None:
            self._protocol.unsubscribe(reg)

        return unsub

    def watch_many(
        self,
        keys: Iterable[str],
        callback: WatchCallback,
        *,
        params: dict[str, Any] | None = None,
    ) -> WatchHandle:
        """Subscribe *callback* to several keys with one multi-key WATCH frame,
        all or nothing.

        ``meta.key`` tells which key an invocation is about. The callback runs
        for none of the keys until every key has its baseline; then it gets
        each key's current value (``"init"``, or ``"cache"`` for keys that
        were already watched). If the server refuses any key (bad key, ACL
        403, a limit), no key of the call stays subscribed and the error (a
        :class:`~sodp.errors.ServerError` with ``.code``) is raised by
        ``await handle`` (and also given to ``on_error``).

        Returns a :class:`WatchHandle`: call it to remove the callback from
        every key, await it to wait until the call is settled.
        """
        keys = list(keys)
        for key in keys:
            if isinstance(key, str) and _is_pattern(key):
                self._require("prefix_watch", f"watching the pattern {key!r}")
        regs, cached, group = self._protocol.watch_many(keys, callback, params)
        done: asyncio.Future[None] = self._loop.create_future()
        done.add_done_callback(_consume)
        if group is None:
            done.set_result(None)
        elif self._fatal is not None:
            done.set_exception(self._fatal)
        elif self._closed:
            done.set_exception(ConnectionLost("client closed"))
        else:
            self._groups[group] = done
        self._wakeup.set()
        for event in cached:
            self._dispatch(event)

        def unsub() -> None:
            for reg in regs:
                self._protocol.unsubscribe(reg)

        return WatchHandle(unsub, done)

    def unwatch(self, key: str) -> None:
        """Cancel the server subscription for *key* and clear its local state."""
        for event in self._protocol.unwatch(key):
            if isinstance(event, StateChanged):
                self._dispatch(event)
            elif isinstance(event, WatchSettled):
                self._settle(event)
        self._wakeup.set()

    def get(self, key: str) -> JsonValue:
        """The cached value of *key*, or ``None`` (not watched, or no value yet)."""
        return self._protocol.get(key)

    def is_watching(self, key: str) -> bool:
        """True if this client has a subscription for *key*."""
        return self._protocol.is_watching(key)

    def state(self, key: str) -> StateRef:
        """A handle scoped to *key*."""
        return StateRef(self, key)

    # ── calls ─────────────────────────────────────────────────────────────────

    async def call(
        self,
        method: str,
        args: dict[str, Any],
        *,
        timeout: float | None = _UNSET,
        idempotency_key: str | None = None,
    ) -> JsonValue:
        """Invoke a server method and return the RESULT's data.

        Raises :class:`~sodp.errors.CallError` (with ``.code``) when the server
        refuses, :class:`~sodp.errors.ConnectionLost` if the connection drops
        while the call is in flight (unless it carries an idempotency key:
        then it is resent after the reconnect), :class:`~sodp.errors.CallTimeout`
        after *timeout* (default: the client's ``call_timeout``). Calls made
        while not connected are queued (at most ``max_pending_calls``, else
        :class:`~sodp.errors.CallQueueFull`) and sent once the session is ready.

        *idempotency_key* (extension ``idempotency``): the key to send with
        this call instead of a generated one; repeating a key with the same
        method and args returns the first call's RESULT and changes nothing.
        """
        if self._fatal is not None:
            raise self._fatal
        if self._closed:
            raise ConnectionLost("client closed")
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
            await self._require_ready("idempotency", f"{method} with idempotency_key")
        limit = self._call_timeout if timeout is _UNSET else timeout
        cid = self._protocol.call(method, args, idempotency_key)
        fut: asyncio.Future[JsonValue] = self._loop.create_future()
        self._futures[cid] = fut
        self._wakeup.set()
        try:
            async with asyncio.timeout(limit):
                return await fut
        except TimeoutError:
            raise CallTimeout(f"no RESULT for {method} within {limit}s") from None
        finally:
            self._futures.pop(cid, None)
            self._protocol.cancel_call(cid)

    # Values are ``Any``: anything msgpack can pack is sent as is (see sodp.values).

    async def _write(
        self, method: str, args: dict[str, Any], idempotency_key: str | None = None
    ) -> WriteResult:
        return cast(WriteResult, await self.call(method, args, idempotency_key=idempotency_key))

    def _require(self, capability: str, what: str) -> None:
        """Raise :class:`UnsupportedError` unless the server advertises *capability*."""
        if not self._protocol.capabilities.get(capability):
            if not self._ready.done() and not self._protocol.capabilities:
                raise UnsupportedError(
                    capability, f"{what} (no HELLO yet: await client.ready first)"
                )
            raise UnsupportedError(capability, what)

    async def _require_ready(self, capability: str, what: str) -> None:
        """Wait for the first session (whose HELLO tells the capabilities), then
        :meth:`_require`."""
        if not self._ready.done() or self._ready.exception() is not None:
            limit = self._call_timeout
            try:
                async with asyncio.timeout(limit):
                    await asyncio.shield(self._ready)
            except TimeoutError:
                raise CallTimeout(f"not connected within {limit}s") from None
        self._require(capability, what)

    async def _ext_write(
        self,
        method: str,
        args: dict[str, Any],
        if_version: int | None,
        ttl: int | None,
        idempotency_key: str | None,
    ) -> WriteResult:
        args = _write_args(args, if_version, ttl)
        if if_version is not None:
            await self._require_ready("conditional", f"{method} with if_version")
        if ttl is not None:
            await self._require_ready("ttl", f"{method} with ttl")
        return await self._write(method, args, idempotency_key)

    async def set(
        self,
        key: str,
        value: Any,
        *,
        if_version: int | None = None,
        ttl: int | None = None,
        idempotency_key: str | None = None,
    ) -> WriteResult:
        """Replace the value of *key*.

        ``if_version=N``: only if the key's version is N now (0: only if it
        holds no value), else :class:`~sodp.errors.ConflictError` with the
        current ``.version`` and nothing changes (extension ``conditional``).
        ``ttl=MS``: the key expires MS milliseconds after this write (0 removes
        a deadline; extension ``ttl``). ``idempotency_key=K``: send K instead
        of a generated key (extension ``idempotency``; see :meth:`call`).
        """
        return await self._ext_write(
            "state.set", {"state": key, "value": value}, if_version, ttl, idempotency_key
        )

    async def patch(
        self,
        key: str,
        partial: dict[str, Any],
        *,
        if_version: int | None = None,
        ttl: int | None = None,
        idempotency_key: str | None = None,
    ) -> WriteResult:
        """Deep-merge *partial* into the value of *key* (``if_version``,
        ``ttl``, ``idempotency_key`` as for :meth:`set`)."""
        return await self._ext_write(
            "state.patch", {"state": key, "patch": partial}, if_version, ttl, idempotency_key
        )

    async def set_in(
        self,
        key: str,
        path: str,
        value: Any,
        *,
        if_version: int | None = None,
        ttl: int | None = None,
        idempotency_key: str | None = None,
    ) -> WriteResult:
        """Set one location of *key* by JSON Pointer, creating intermediates
        (``if_version``, ``ttl``, ``idempotency_key`` as for :meth:`set`)."""
        return await self._ext_write(
            "state.set_in",
            {"state": key, "path": path, "value": value},
            if_version,
            ttl,
            idempotency_key,
        )

    async def delete(
        self, key: str, *, if_version: int | None = None, idempotency_key: str | None = None
    ) -> WriteResult:
        """Remove *key* on the server (``if_version``, ``idempotency_key`` as
        for :meth:`set`)."""
        return await self._ext_write(
            "state.delete", {"state": key}, if_version, None, idempotency_key
        )

    async def presence(self, key: str, path: str, value: Any) -> WriteResult:
        """Set *path* in *key* and bind it to this session: removed when it ends.

        In flight when the connection drops, it is sent again on the next
        session (when the server advertises ``idempotency``), to bind it there.
        """
        return await self._write("state.presence", {"state": key, "path": path, "value": value})

    # ── one-shot reads (extension ``read``) ───────────────────────────────────

    async def fetch(self, key: str) -> FetchResult:
        """Read *key* once from the server, without subscribing (``state.get``).

        Unlike :meth:`get` (the cached value of a watched key) this asks the
        server. A key that holds no value gives ``initialized: False``.
        """
        await self._require_ready("read", "fetch()")
        return cast(FetchResult, await self.call("state.get", {"state": key}))

    async def keys(
        self, prefix: str | None = None, *, after: str | None = None, limit: int | None = None
    ) -> KeysPage:
        """One page of the keys that hold a value now, in byte order
        (``state.keys``).

        *prefix* matches whole segments (``"a.b"`` lists ``a.b`` and ``a.b.c``,
        not ``a.bc``); only keys after *after*, at most *limit* (server
        default 100). ``page.get("next")`` is the *after* of the next page;
        :meth:`iter_keys` walks every page.
        """
        await self._require_ready("read", "keys()")
        args: dict[str, Any] = {}
        if prefix is not None:
            args["prefix"] = prefix
        if after is not None:
            args["after"] = after
        if limit is not None:
            args["limit"] = limit
        return cast(KeysPage, await self.call("state.keys", args))

    async def iter_keys(
        self, prefix: str | None = None, *, page_size: int | None = None
    ) -> AsyncIterator[str]:
        """Every key under *prefix*, fetching pages with :meth:`keys` as needed."""
        after: str | None = None
        while True:
            page = await self.keys(prefix, after=after, limit=page_size)
            for key in page["keys"]:
                yield key
            nxt = page.get("next")
            if nxt is None:
                return
            after = nxt

    async def history(
        self, key: str, *, since_version: int | None = None, limit: int | None = None
    ) -> HistoryPage:
        """The retained changes of *key* after *since_version*, oldest first
        (``state.history``). Page by passing the last entry's version back."""
        await self._require_ready("read", "history()")
        args: dict[str, Any] = {"state": key}
        if since_version is not None:
            args["since_version"] = since_version
        if limit is not None:
            args["limit"] = limit
        return cast(HistoryPage, await self.call("state.history", args))

    # ── read-modify-write and transactions ────────────────────────────────────

    @overload
    async def transact(
        self,
        key: str,
        fn: Callable[[JsonValue], Awaitable[_T]],
        *,
        max_attempts: int = 25,
    ) -> Transacted[_T]: ...

    @overload
    async def transact(
        self, key: str, fn: Callable[[JsonValue], _T], *, max_attempts: int = 25
    ) -> Transacted[_T]: ...

    async def transact(
        self,
        key: str,
        fn: Callable[[JsonValue], Any],
        *,
        max_attempts: int = 25,
    ) -> Transacted[Any]:
        """Read *key*, compute ``fn(current)``, write the result only if the
        key did not change meanwhile; on a conflict read again and retry.

        Like Firebase's ``runTransaction``: *fn* (sync or async) gets the
        current value (``None`` when the key holds none) and returns the new
        one; it may run several times, so it must not have side effects. To
        give up, raise from *fn* (the exception propagates, nothing is
        written). After *max_attempts* conflicts the last
        :class:`~sodp.errors.ConflictError` is raised. Needs the extensions
        ``read`` and ``conditional``.
        """
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        await self._require_ready("read", "transact()")
        self._require("conditional", "transact()")
        current = await self.fetch(key)
        backoff = Backoff(0.005, 0.25)
        for attempt in range(1, max_attempts + 1):
            result = fn(current["value"])
            value = await result if inspect.isawaitable(result) else result
            expected = current["version"] if current["initialized"] else 0
            try:
                written = await self.set(key, value, if_version=expected)
            except ConflictError:
                if attempt == max_attempts:
                    raise
                await asyncio.sleep(backoff.next_delay())
                current = await self.fetch(key)
                continue
            return Transacted(value, written["version"], attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def transaction(self) -> Transaction:
        """A builder for one all-or-nothing write of several keys
        (``state.transaction``, extension ``transaction``)::

            await (client.transaction()
                   .patch("bank.alice", {"balance": 90}, if_version=17)
                   .patch("bank.bob", {"balance": 110}, if_version=12)
                   .commit())

        Every op may carry ``if_version`` (compared with the state before the
        transaction); if one fails, nothing is applied and
        :class:`~sodp.errors.ConflictError` says which (``.op``) and the
        key's current ``.version``. All changes take one version.
        """
        return Transaction(self)


class Transaction:
    """Ops collected for one ``state.transaction``; see :meth:`SodpClient.transaction`.

    Each method adds one op and returns the builder, so calls chain;
    :meth:`commit` sends them (1 to 64 ops) and returns the one version they
    all took.
    """

    __slots__ = ("_client", "_committed", "ops")

    def __init__(self, client: SodpClient) -> None:
        self._client = client
        self._committed = False
        self.ops: list[dict[str, Any]] = []

    def _add(
        self, method: str, args: dict[str, Any], if_version: int | None, ttl: int | None
    ) -> Self:
        if self._committed:
            raise RuntimeError("this transaction was already committed")
        self.ops.append({"method": method, "args": _write_args(args, if_version, ttl)})
        return self

    def set(
        self, key: str, value: Any, *, if_version: int | None = None, ttl: int | None = None
    ) -> Self:
        return self._add("state.set", {"state": key, "value": value}, if_version, ttl)

    def patch(
        self,
        key: str,
        partial: dict[str, Any],
        *,
        if_version: int | None = None,
        ttl: int | None = None,
    ) -> Self:
        return self._add("state.patch", {"state": key, "patch": partial}, if_version, ttl)

    def set_in(
        self,
        key: str,
        path: str,
        value: Any,
        *,
        if_version: int | None = None,
        ttl: int | None = None,
    ) -> Self:
        return self._add(
            "state.set_in", {"state": key, "path": path, "value": value}, if_version, ttl
        )

    def delete(self, key: str, *, if_version: int | None = None) -> Self:
        return self._add("state.delete", {"state": key}, if_version, None)

    async def commit(self, *, idempotency_key: str | None = None) -> WriteResult:
        """Send the transaction; all its changes or none are applied
        (``idempotency_key`` as for :meth:`SodpClient.set`)."""
        if self._committed:
            raise RuntimeError("this transaction was already committed")
        if not self.ops:
            raise ValueError("a transaction needs at least one op")
        client = self._client
        await client._require_ready("transaction", "transaction().commit()")
        if any("ttl_ms" in op["args"] for op in self.ops):
            client._require("ttl", "a transaction op with ttl")
        self._committed = True
        return await client._write("state.transaction", {"ops": self.ops}, idempotency_key)


class WatchHandle:
    """What :meth:`SodpClient.watch_many` returns.

    Call it (``handle()``) to remove the callback from every key of the call,
    like the function ``watch()`` returns. Await it (``await handle``) to wait
    until the call is settled: returns once every key has its baseline;
    raises :class:`~sodp.errors.ServerError` if the server refused a key (then
    nothing of the call is subscribed), or what ``ready`` raises if the client
    gives up first.
    """

    __slots__ = ("_done", "_unsub")

    def __init__(self, unsub: Callable[[], None], done: asyncio.Future[None]) -> None:
        self._unsub = unsub
        self._done = done

    def __call__(self) -> None:
        self._unsub()

    def __await__(self) -> Generator[Any, None, None]:
        return asyncio.shield(self._done).__await__()

    @property
    def settled(self) -> bool:
        """True once the call succeeded or failed."""
        return self._done.done()


class StateRef:
    """A key-scoped handle: ``client.state("game.player")``."""

    __slots__ = ("_client", "key")

    def __init__(self, client: SodpClient, key: str) -> None:
        self._client = client
        self.key = key

    def __repr__(self) -> str:
        return f"StateRef({self.key!r})"

    def watch(
        self, callback: WatchCallback, *, params: dict[str, Any] | None = None
    ) -> Callable[[], None]:
        """Subscribe to this key; returns an unsubscribe function."""
        return self._client.watch(self.key, callback, params=params)

    def get(self) -> JsonValue:
        """The cached value."""
        return self._client.get(self.key)

    def is_watching(self) -> bool:
        return self._client.is_watching(self.key)

    def unwatch(self) -> None:
        """Cancel the subscription and clear the local state of this key."""
        self._client.unwatch(self.key)

    async def set(
        self,
        value: Any,
        *,
        if_version: int | None = None,
        ttl: int | None = None,
        idempotency_key: str | None = None,
    ) -> WriteResult:
        return await self._client.set(
            self.key, value, if_version=if_version, ttl=ttl, idempotency_key=idempotency_key
        )

    async def patch(
        self,
        partial: dict[str, Any],
        *,
        if_version: int | None = None,
        ttl: int | None = None,
        idempotency_key: str | None = None,
    ) -> WriteResult:
        return await self._client.patch(
            self.key, partial, if_version=if_version, ttl=ttl, idempotency_key=idempotency_key
        )

    async def set_in(
        self,
        path: str,
        value: Any,
        *,
        if_version: int | None = None,
        ttl: int | None = None,
        idempotency_key: str | None = None,
    ) -> WriteResult:
        return await self._client.set_in(
            self.key, path, value, if_version=if_version, ttl=ttl, idempotency_key=idempotency_key
        )

    async def delete(
        self, *, if_version: int | None = None, idempotency_key: str | None = None
    ) -> WriteResult:
        return await self._client.delete(
            self.key, if_version=if_version, idempotency_key=idempotency_key
        )

    async def fetch(self) -> FetchResult:
        """Read this key once from the server (see :meth:`SodpClient.fetch`)."""
        return await self._client.fetch(self.key)

    async def history(
        self, *, since_version: int | None = None, limit: int | None = None
    ) -> HistoryPage:
        return await self._client.history(self.key, since_version=since_version, limit=limit)

    @overload
    async def transact(
        self, fn: Callable[[JsonValue], Awaitable[_T]], *, max_attempts: int = 25
    ) -> Transacted[_T]: ...

    @overload
    async def transact(
        self, fn: Callable[[JsonValue], _T], *, max_attempts: int = 25
    ) -> Transacted[_T]: ...

    async def transact(
        self, fn: Callable[[JsonValue], Any], *, max_attempts: int = 25
    ) -> Transacted[Any]:
        return await self._client.transact(self.key, fn, max_attempts=max_attempts)

    async def presence(self, path: str, value: Any) -> WriteResult:
        return await self._client.presence(self.key, path, value)
