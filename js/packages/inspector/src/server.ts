/**
 * Server: `admin.stats` polled every second while shown — connections,
 * keys, memory, history, durability and cluster status — and charts of
 * writes/s (new versions), deliveries/s and connections over the last
 * `POINTS` polls.
 */

import type { App, Stats, View } from "./app.ts";
import { ago, bytes, h, replace } from "./dom.ts";
import { Poller } from "./poll.ts";

const POINTS = 60;
const SVG = "http://www.w3.org/2000/svg";

class Chart {
  readonly root: HTMLElement;
  private readonly _line = document.createElementNS(SVG, "polyline");
  private readonly _value = h("span", { class: "chart-value" });
  private readonly _points: number[] = [];

  constructor(
    title: string,
    private readonly _unit: string,
  ) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${POINTS} 40`);
    svg.setAttribute("preserveAspectRatio", "none");
    this._line.setAttribute("fill", "none");
    this._line.setAttribute("stroke-width", "1.5");
    this._line.setAttribute("vector-effect", "non-scaling-stroke");
    svg.appendChild(this._line);
    this.root = h("div", { class: "chart" }, h("div", { class: "chart-head" }, title, this._value), svg);
  }

  push(v: number): void {
    this._points.push(v);
    if (this._points.length > POINTS) this._points.shift();
    const max = Math.max(1, ...this._points);
    // Until a minute of polls is in, the points span the width.
    const step = (POINTS - 1) / Math.max(1, this._points.length - 1);
    this._line.setAttribute("points", this._points.map((p, i) => `${(i * step).toFixed(2)},${(38 - (p / max) * 36).toFixed(2)}`).join(" "));
    this._value.textContent = `${v.toFixed(v < 10 && v % 1 !== 0 ? 1 : 0)} ${this._unit} · max ${max.toFixed(0)}`;
  }
}

export class ServerView implements View {
  readonly name = "Server";
  readonly root: HTMLElement;
  private readonly _cards = h("div", { class: "cards", id: "server-cards" });
  private readonly _writes = new Chart("writes/s", "/s");
  private readonly _deliveries = new Chart("deliveries/s", "/s");
  private readonly _connections = new Chart("connections", "");
  private readonly _poll = new Poller(1000, () => this._load());
  private _last: { at: number; version: number; deliveries: number } | undefined;

  constructor(private readonly _app: App) {
    this.root = h(
      "section",
      null,
      this._cards,
      h("div", { class: "charts" }, this._writes.root, this._deliveries.root, this._connections.root),
    );
  }

  show(): void {
    this._poll.start();
  }

  hide(): void {
    this._poll.stop();
    this._last = undefined; // a gap is not a rate
  }

  private async _load(): Promise<void> {
    const a = await this._app.ask("admin.stats", {});
    if (!a.success) {
      replace(this._cards, h("p", null, `${a.code ?? ""} ${String(a.data)}`));
      return;
    }
    const s = a.data as Stats;
    this._app.stats = s;
    const now = s.server.now;
    if (this._last && now > this._last.at) {
      const secs = (now - this._last.at) / 1000;
      this._writes.push((s.version - this._last.version) / secs);
      this._deliveries.push((s.counters.deliveries! - this._last.deliveries) / secs);
    }
    this._connections.push(s.connections);
    this._last = { at: now, version: s.version, deliveries: s.counters.deliveries! };
    const card = (label: string, value: string, sub?: string) =>
      h(
        "div",
        { class: "card" },
        h("div", { class: "card-label" }, label),
        h("div", { class: "card-value" }, value),
        sub ? h("div", { class: "muted" }, sub) : null,
      );
    const m = s.memory;
    replace(
      this._cards,
      card("connections", String(s.connections)),
      card("keys", String(s.keys), `version ${s.version}`),
      card("memory", `${bytes(m.used)} / ${bytes(m.max)}`, `values ${bytes(m.values)} · RSS ${bytes(m.rss)}`),
      card("history", bytes(m.history)),
      card(
        "durability",
        s.storage.durable ? "durable" : "in memory",
        `${s.storage.engine}${s.storage.ready ? "" : ` · NOT READY: ${s.storage.problem ?? ""}`}`,
      ),
      card(
        "cluster",
        s.cluster.redis ? `${s.cluster.mode} on ${s.cluster.redis}` : s.cluster.mode,
        s.cluster.nodes
          .map((n) => `${n.id ?? n.addr ?? "?"}${n.self ? " (this node)" : ""}${n.alive ? "" : " (dead: lease expired)"}`)
          .join(", "),
      ),
      card("uptime", ago(s.server.started_at, now), `sodp-server ${s.server.version} (${s.server.commit})`),
      card("inspector", s.inspector.writes ? "writes allowed" : "read-only", s.inspector.public ? "public" : "loopback / admin tokens"),
    );
  }
}
