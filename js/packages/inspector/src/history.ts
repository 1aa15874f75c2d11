/**
 * A key's retained changes (`state.history`, paged): step back and forth
 * through its versions, see each one's ops and the value it left (rebuilt
 * by applying the ops from the start, when the server still has them
 * all), diff two versions, export as JSON.
 */

import { applyOps, type DeltaOp } from "@sodp/client";
import { type App, type View, writerLabel } from "./app.ts";
import { diff } from "./diff.ts";
import { download, h, jsonSafe, onSubmit, replace, short } from "./dom.ts";
import { renderTree } from "./tree.ts";

interface HistEntry {
  version: number;
  ops: DeltaOp[];
}

/** Entries fetched at most (ten pages). */
const MAX_ENTRIES = 10_000;

export class HistoryView implements View {
  readonly name = "History";
  readonly root: HTMLElement;
  private readonly _key = h("input", { placeholder: "key", id: "history-key", spellcheck: "false" });
  private readonly _status = h("p", { class: "muted", id: "history-status" });
  private readonly _versions = h("select", { size: 12, id: "history-versions", onchange: () => this._step(this._versions.selectedIndex) });
  private readonly _a = h("select", { id: "diff-a" });
  private readonly _b = h("select", { id: "diff-b" });
  private readonly _out = h("div", { class: "detail", id: "history-detail" });
  private _entries: HistEntry[] = [];
  private _values: unknown[] | undefined;
  private _complete = true;
  private _at = -1;

  constructor(private readonly _app: App) {
    const form = h(
      "form",
      { class: "bar", onsubmit: onSubmit(() => void this.load(this._key.value.trim())) },
      this._key,
      h("button", null, "Load"),
    );
    const nav = h(
      "div",
      { class: "bar" },
      h("button", { type: "button", id: "history-back", onclick: () => this._step(this._at - 1) }, "◀ Back"),
      h("button", { type: "button", onclick: () => this._step(this._at + 1) }, "Forward ▶"),
      h("button", { type: "button", onclick: () => this._export() }, "Export JSON"),
    );
    const diffBar = h(
      "div",
      { class: "bar" },
      "Diff ",
      this._a,
      " → ",
      this._b,
      h("button", { type: "button", id: "diff-run", onclick: () => this._diff() }, "Diff"),
    );
    this.root = h("section", { class: "split" }, h("div", { class: "pane" }, form, this._status, this._versions, nav, diffBar), this._out);
  }

  show(): void {}
  hide(): void {}

  async load(key: string): Promise<void> {
    if (!key) return;
    this._entries = [];
    let since = 0;
    let complete = true;
    for (;;) {
      const a = await this._app.ask("state.history", { state: key, since_version: since, limit: 1000 });
      if (!a.success) {
        replace(this._status, `${a.code ?? ""} ${String(a.data)}`);
        return;
      }
      const page = a.data as { entries: HistEntry[]; complete: boolean };
      if (since === 0) complete = page.complete;
      this._entries.push(...page.entries.map((e) => ({ version: Number(e.version), ops: e.ops })));
      if (page.entries.length < 1000 || this._entries.length >= MAX_ENTRIES) break;
      since = this._entries[this._entries.length - 1]!.version;
    }
    this._complete = complete;
    this._values = undefined;
    if (complete) {
      let v: unknown = null;
      this._values = this._entries.map((e) => {
        v = applyOps(v, e.ops);
        return v;
      });
    }
    const label = (e: HistEntry) => `v${e.version} · ${e.ops.length} op${e.ops.length === 1 ? "" : "s"}`;
    for (const sel of [this._versions, this._a, this._b])
      replace(
        sel,
        this._entries.map((e) => h("option", null, label(e))),
      );
    if (this._entries.length > 1) this._a.selectedIndex = this._entries.length - 2;
    this._b.selectedIndex = this._entries.length - 1;
    replace(
      this._status,
      this._entries.length === 0
        ? `${key}: no retained changes`
        : `${key}: ${this._entries.length} changes retained${complete ? "" : " — older ones already dropped, so values cannot be rebuilt (ops only)"}`,
    );
    this._step(this._entries.length - 1);
  }

  private _step(i: number): void {
    if (i < 0 || i >= this._entries.length) return;
    this._at = i;
    this._versions.selectedIndex = i;
    const e = this._entries[i]!;
    const ops = h(
      "div",
      null,
      e.ops.map((o) =>
        h(
          "div",
          { class: "op mono" },
          h("b", { class: `op-${o.op}` }, o.op),
          ` ${o.path}`,
          "value" in o ? ` = ${short(o.value, 300)}` : "",
        ),
      ),
    );
    replace(
      this._out,
      h("h2", null, `version ${e.version}`),
      h("p", { class: "muted" }, `writer: ${writerLabel(this._app.writer(e.version))} · change ${i + 1} of ${this._entries.length}`),
      ops,
      this._values ? h("h3", null, "value after this change") : null,
      this._values ? renderTree(this._values[i]) : null,
    );
  }

  private _diff(): void {
    const [i, j] = [this._a.selectedIndex, this._b.selectedIndex];
    if (!this._values || i < 0 || j < 0) {
      replace(
        this._out,
        h("p", { class: "muted" }, this._complete ? "Load a key first." : "History incomplete: values cannot be rebuilt to diff."),
      );
      return;
    }
    const changes = diff(this._values[i], this._values[j]);
    replace(
      this._out,
      h("h2", null, `v${this._entries[i]!.version} → v${this._entries[j]!.version}`),
      h("p", { class: "muted" }, `${changes.length} difference${changes.length === 1 ? "" : "s"}`),
      h(
        "table",
        { class: "list", id: "diff-table" },
        h(
          "tbody",
          null,
          changes.map((c) =>
            h(
              "tr",
              { class: `diff-${c.kind}` },
              h("td", { class: "mono" }, c.path),
              h("td", null, c.kind),
              h("td", { class: "mono" }, "before" in c ? short(c.before) : ""),
              h("td", { class: "mono" }, "after" in c ? short(c.after) : ""),
            ),
          ),
        ),
      ),
    );
  }

  private _export(): void {
    const key = this._key.value.trim();
    const body = { key, complete: this._complete, entries: this._entries };
    download(`${key || "history"}.history.json`, JSON.stringify(body, jsonSafe, 2));
  }
}
