/**
 * @sodp/react — React bindings for @sodp/client, on `useSyncExternalStore`.
 *
 * - No tearing, and a key already in the client's cache renders its value on
 *   the first render.
 * - A component re-renders only when what it reads changes: the value of its
 *   key (or the selected part of it), or the status it asked for. The context
 *   value is stable for the client's lifetime, so connect/disconnect does not
 *   re-render every consumer.
 * - StrictMode-safe: the provider creates its client in an effect and defers
 *   closing it by a tick, so StrictMode's mount → unmount → mount reuses one
 *   client (one socket).
 */
import { type ConnectionStatus, SodpClient, type SodpClientOptions, type StateRef, type WatchMeta } from "@sodp/client";
import {
  createContext,
  createElement,
  type ReactNode,
  useCallback,
  useContext,
  useLayoutEffect,
  useMemo,
  useRef,
  useState,
  useSyncExternalStore,
} from "react";

export * from "@sodp/client";

export interface SODPContextValue {
  client: SodpClient | null;
  /** Read when accessed (a getter): reading it does not subscribe; use `useSodpConnected()` for that. */
  readonly connected: boolean;
}

export type SODPProviderProps = SodpClientOptions & {
  children?: ReactNode;
} & ({ url: string; client?: undefined } | { client: SodpClient; url?: undefined });

const SODPContext = createContext<SODPContextValue>({ client: null, connected: false });

function contextFor(client: SodpClient | null): SODPContextValue {
  return {
    client,
    get connected() {
      return client?.connected ?? false;
    },
  };
}

interface Owned {
  client: SodpClient;
  url: string;
  closeTimer: ReturnType<typeof setTimeout> | undefined;
}

/**
 * Provides a client to the tree: pass `url` (+ client options) to have the
 * provider create it — recreated when `url` changes, closed on unmount — or a
 * ready `client` that you own.
 */
export function SODPProvider(props: SODPProviderProps): ReturnType<typeof createElement> {
  const { children, url, client: given, ...options } = props;
  const [ownClient, setOwnClient] = useState<SodpClient | null>(null);
  const owned = useRef<Owned | null>(null);
  const optionsRef = useRef(options);
  optionsRef.current = options;

  useLayoutEffect(() => {
    if (given || url === undefined) return;
    let o = owned.current;
    if (o && o.url === url && o.client.status !== "closed") {
      clearTimeout(o.closeTimer); // StrictMode remount: keep the same client
      o.closeTimer = undefined;
    } else {
      if (o) o.client.close();
      // Callbacks go through the ref, so changing them does not recreate the client.
      const opts = optionsRef.current;
      o = owned.current = {
        url,
        closeTimer: undefined,
        client: new SodpClient(url, {
          ...opts,
          onConnect: () => optionsRef.current.onConnect?.(),
          onDisconnect: () => optionsRef.current.onDisconnect?.(),
          ...(opts.onError ? { onError: (e) => optionsRef.current.onError?.(e) } : {}),
          onStatusChange: (s, p) => optionsRef.current.onStatusChange?.(s, p),
        }),
      };
    }
    setOwnClient(o.client);
    const mine = o;
    return () => {
      mine.closeTimer = setTimeout(() => {
        mine.client.close();
        if (owned.current === mine) owned.current = null;
      }, 0);
    };
  }, [url, given]);

  const client = given ?? ownClient;
  const value = useMemo(() => contextFor(client), [client]);
  return createElement(SODPContext.Provider, { value }, children);
}

export function useSodpClient(): SodpClient | null {
  return useContext(SODPContext).client;
}

const noop = () => {};
const noSubscribe = () => noop;

/** The client's connection status; re-renders only when it changes. */
export function useSodpStatus(): ConnectionStatus {
  const client = useSodpClient();
  const subscribe = useCallback((cb: () => void) => (client ? client.onStatusChange(cb) : noop), [client]);
  const get = () => client?.status ?? "connecting";
  return useSyncExternalStore(subscribe, get, get);
}

export function useSodpConnected(): boolean {
  return useSodpStatus() === "connected";
}

export interface SelectOptions<T, S> {
  /** Derive what the component needs; it re-renders only when that changes (by `isEqual`, default `Object.is`). */
  select?: (value: T | null) => S;
  isEqual?: (a: S, b: S) => boolean;
}

function paramsKey(params: Record<string, unknown> | undefined): string {
  return params === undefined ? "" : JSON.stringify(params);
}

/**
 * Watch `key`: `[value, meta, ref]`. Values keep their identity where
 * unchanged (structural sharing), so `React.memo` children and `select`
 * results stay stable.
 */
export function useSodpState<T = unknown, S = T | null>(
  key: string,
  params?: Record<string, unknown>,
  options?: SelectOptions<T, S>,
): [S, WatchMeta | null, StateRef<T> | null] {
  const client = useSodpClient();
  const pk = paramsKey(params);
  // biome-ignore lint/correctness/useExhaustiveDependencies: params are compared by content (pk)
  const subscribe = useCallback((cb: () => void) => (client ? client.watch<T>(key, () => cb(), params) : noop), [client, key, pk]);
  const select = options?.select;
  const isEqual = options?.isEqual ?? Object.is;
  const memo = useRef<{ raw: unknown; out: S } | null>(null);
  const getValue = (): S => {
    const raw = (client?.getSnapshot<T>(key) ?? null) as T | null;
    if (!select) return raw as unknown as S;
    const m = memo.current;
    if (m && Object.is(m.raw, raw)) return m.out;
    const out = select(raw);
    if (m && isEqual(m.out, out)) {
      m.raw = raw;
      return m.out;
    }
    memo.current = { raw, out };
    return out;
  };
  const value = useSyncExternalStore(subscribe, getValue, getValue);
  const getMeta = () => client?.getMeta(key) ?? null;
  const meta = useSyncExternalStore(select ? noSubscribe : subscribe, getMeta, getMeta);
  const ref = useMemo(() => (client ? client.state<T>(key) : null), [client, key]);
  return [value, select ? (client?.getMeta(key) ?? null) : meta, ref];
}

/** Like `useSodpState(key, undefined, { select, isEqual })`, returning only the selected value. */
export function useSodpSelector<T, S>(key: string, select: (value: T | null) => S, isEqual?: (a: S, b: S) => boolean): S {
  return useSodpState<T, S>(key, undefined, isEqual ? { select, isEqual } : { select })[0];
}

/** Watch several keys: a new `Map<key, [value, meta]>` whenever one of them changes (never the same Map mutated). */
export function useSodpStates<T = unknown>(keys: string[], params?: Record<string, unknown>): Map<string, [T | null, WatchMeta | null]> {
  const client = useSodpClient();
  const kk = keys.join("\u0000");
  const pk = paramsKey(params);
  // biome-ignore lint/correctness/useExhaustiveDependencies: keys and params are compared by content
  const subscribe = useCallback(
    (cb: () => void) => (client && keys.length > 0 ? client.watchMany<T>(keys, () => cb(), params) : noop),
    [client, kk, pk],
  );
  const cache = useRef<{ parts: unknown[]; map: Map<string, [T | null, WatchMeta | null]> } | null>(null);
  const get = () => {
    const parts: unknown[] = [];
    for (const k of keys) parts.push(client?.getSnapshot(k) ?? null, client?.getMeta(k) ?? null);
    const c = cache.current;
    if (c && c.parts.length === parts.length && c.parts.every((p, i) => Object.is(p, parts[i]))) return c.map;
    const map = new Map<string, [T | null, WatchMeta | null]>();
    keys.forEach((k, i) => {
      map.set(k, [parts[2 * i] as T | null, parts[2 * i + 1] as WatchMeta | null]);
    });
    cache.current = { parts, map };
    return map;
  };
  return useSyncExternalStore(subscribe, get, get);
}

/** A `StateRef` for `key` (stable while the client and key are). */
export function useSodpRef<T = unknown>(key: string): StateRef<T> | null {
  const client = useSodpClient();
  return useMemo(() => (client ? client.state<T>(key) : null), [client, key]);
}

/**
 * Presence: publish `value` at `path` of `key` for this session (again after
 * every reconnect, since the server removes a session's presence when it
 * ends), and return the key's whole value — everyone's presence. On unmount
 * the path is set to `null`; the server removes it when the session ends.
 * `value` is compared by content, so an inline object literal is fine.
 */
export function useSodpPresence<T = unknown>(key: string, path: string, value: unknown): T | null {
  const client = useSodpClient();
  const status = useSodpStatus();
  const [all] = useSodpState<T>(key);
  const vk = JSON.stringify(value ?? null);
  useLayoutEffect(() => {
    if (!client || status !== "connected") return;
    client.presence(key, path, JSON.parse(vk)).catch(noop);
  }, [client, status, key, path, vk]);
  useLayoutEffect(() => {
    if (!client) return;
    return () => {
      if (client.connected) client.presence(key, path, null).catch(noop);
    };
  }, [client, key, path]);
  return all as T | null;
}
