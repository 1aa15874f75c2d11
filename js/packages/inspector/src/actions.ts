/**
 * Actions console: set / patch / set_in / delete on any key, with the
 * server's answer shown verbatim — success data, or the failure's code and
 * message (403 when the inspector is read-only or the ACL refuses, 409 for
 * a failed `if_version`, 422 for a schema violation): never swallowed.
 */

import type { App, View } from "./app.ts";
import { h, jsonSafe, onSubmit, replace } from "./dom.ts";

const METHODS = ["state.set", "state.patch", "state.set_in", "state.delete"] as const;

export class ActionsView implements View {
  readonly name = "Actions";
  readonly root: HTMLElement;
  private readonly _method = h(
    "select",
    { id: "action-method", onchange: () => this._fields() },
    METHODS.map((m) => h("option", null, m)),
  );
  private readonly _key = h("input", { id: "action-key", placeholder: "key", spellcheck: "false" });
  private readonly _path = h("input", { id: "action-path", placeholder: "JSON Pointer: /a/b", spellcheck: "false" });
  private readonly _value = h("textarea", { id: "action-value", rows: 6, placeholder: "JSON value", spellcheck: "false" });
  private readonly _ifVersion = h("input", { id: "action-if-version", placeholder: "if_version (optional)", inputmode: "numeric" });
  private readonly _log = h("div", { id: "action-log" });
  private readonly _mode = h("p", { class: "muted" });

  constructor(private readonly _app: App) {
    const form = h(
      "form",
      { class: "actions", onsubmit: onSubmit(() => void this._send()) },
      h("label", null, "method ", this._method),
      h("label", null, "key ", this._key),
      h("label", { class: "path-row" }, "path ", this._path),
      h("label", { class: "value-row" }, "value ", this._value),
      h("label", null, "condition ", this._ifVersion),
      h("button", { id: "action-send" }, "Send"),
    );
    this.root = h("section", null, this._mode, form, h("h3", null, "answers"), this._log);
    this._fields();
  }

  show(): void {
    const writes = this._app.stats?.inspector.writes;
    replace(
      this._mode,
      writes
        ? "Writes are allowed (--inspector-writes)."
        : "The server did not allow writes from the inspector (no --inspector-writes): expect 403.",
    );
  }

  hide(): void {}

  private _fields(): void {
    const m = this._method.value;
    this.root.querySelector(".path-row")?.toggleAttribute("hidden", m !== "state.set_in");
    this.root.querySelector(".value-row")?.toggleAttribute("hidden", m === "state.delete");
  }

  private async _send(): Promise<void> {
    const method = this._method.value;
    const args: Record<string, unknown> = { state: this._key.value.trim() };
    try {
      if (method === "state.set_in") args.path = this._path.value;
      if (method === "state.set" || method === "state.set_in") args.value = JSON.parse(this._value.value || "null");
      if (method === "state.patch") args.patch = JSON.parse(this._value.value || "{}");
    } catch (err) {
      this._show(method, args, { success: false, data: `not sent: the value is not JSON (${err instanceof Error ? err.message : err})` });
      return;
    }
    const iv = this._ifVersion.value.trim();
    if (iv) args.if_version = Number(iv);
    this._show(method, args, await this._app.ask(method, args));
  }

  private _show(method: string, args: Record<string, unknown>, answer: unknown): void {
    const ok = (answer as { success: boolean }).success;
    const entry = h(
      "div",
      { class: ok ? "answer ok" : "answer err" },
      h("div", { class: "mono" }, `→ ${method} ${JSON.stringify(args, jsonSafe)}`),
      h("pre", { class: "mono answer-body" }, `← ${JSON.stringify(answer, jsonSafe, 2)}`),
    );
    this._log.prepend(entry);
    while (this._log.childElementCount > 50) this._log.lastElementChild?.remove();
  }
}
