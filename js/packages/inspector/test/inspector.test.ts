/**
 * The inspector's pure parts in Node (jsdom): polling only while the page
 * is visible, the capped tree and its highlights, diffs, and that values
 * are shown as text, never parsed as HTML.
 */
import "./dom.ts";
import assert from "node:assert/strict";
import { test } from "node:test";
import { diff, MAX_CHANGES } from "../src/diff.ts";
import { Poller } from "../src/poll.ts";
import { changedPaths, MAX_NODES, renderTree } from "../src/tree.ts";
import { setVisible } from "./dom.ts";

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

test("a poller polls only while the page is visible, and at once when it comes back", async () => {
  setVisible(true);
  let calls = 0;
  const p = new Poller(20, () => {
    calls++;
  });
  p.start();
  await tick(5);
  assert.equal(calls, 1, "polls at once");
  await tick(50);
  const visibleCalls = calls;
  assert.ok(visibleCalls >= 2, `${visibleCalls} polls while visible`);
  setVisible(false);
  await tick(30);
  const atHide = calls;
  await tick(100);
  assert.equal(calls, atHide, "no poll while hidden");
  setVisible(true);
  await tick(2);
  assert.equal(calls, atHide + 1, "polls at once when visible again");
  p.stop();
  const atStop = calls;
  await tick(60);
  assert.equal(calls, atStop, "no poll after stop");
});

test("a poller never has two polls in flight", async () => {
  setVisible(true);
  let inFlight = 0;
  let most = 0;
  const p = new Poller(5, async () => {
    inFlight++;
    most = Math.max(most, inFlight);
    await tick(40);
    inFlight--;
  });
  p.start();
  await tick(100);
  p.stop();
  assert.equal(most, 1);
});

test("changedPaths resolves '-' to the appended index and skips removals", () => {
  const after = { list: [1, 2, 3], a: { "b/c": 1 } };
  const got = changedPaths(
    [
      { op: "ADD", path: "/list/-", value: 3 },
      { op: "UPDATE", path: "/a/b~1c", value: 1 },
      { op: "REMOVE", path: "/gone" },
    ],
    after,
  );
  assert.deepEqual([...got], ["/list/2", "/a/b~1c"]);
  assert.deepEqual([...changedPaths([{ op: "ADD", path: "/", value: 1 }], 1)], [""]);
});

test("the tree highlights changed locations and shows values as text", () => {
  const evil = "<img src=x onerror=alert(1)>";
  const el = renderTree({ turn: "bob", html: evil, n: [1, 2] }, new Set(["/turn", "/n/1"]));
  const changed = [...el.querySelectorAll(".changed")].map((e) => e.getAttribute("data-path"));
  assert.deepEqual(changed, ["/turn", "/n/1"]);
  assert.equal(el.querySelector("img"), null, "no markup from a value");
  assert.ok(el.textContent?.includes(evil));
});

test("the tree's rendering is capped", () => {
  const big = Array.from({ length: MAX_NODES * 2 }, (_, i) => i);
  const el = renderTree(big);
  const leaves = el.querySelectorAll(".leaf").length;
  assert.ok(leaves < MAX_NODES, `${leaves} leaves rendered`);
  assert.match(el.querySelector(".capped")?.textContent ?? "", /render capped at 2000 nodes: \d+ more not shown/);
  const long = renderTree("x".repeat(10_000));
  assert.ok((long.textContent?.length ?? 0) < 1000);
});

test("diff lists added, removed and changed locations, capped", () => {
  const a = { turn: "bob", score: { bob: 1 }, list: [1, 2, 3], gone: true };
  const b = { turn: "carol", score: { bob: 1, carol: 5 }, list: [1, 9] };
  assert.deepEqual(diff(a, b), [
    { path: "/gone", kind: "removed", before: true },
    { path: "/turn", kind: "changed", before: "bob", after: "carol" },
    { path: "/score/carol", kind: "added", after: 5 },
    { path: "/list/1", kind: "changed", before: 2, after: 9 },
    { path: "/list/2", kind: "removed", before: 3 },
  ]);
  assert.deepEqual(diff(null, { a: 1 }), [{ path: "/", kind: "added", after: { a: 1 } }]);
  assert.deepEqual(diff({ a: [1] }, { a: [1] }), []);
  const wide = Object.fromEntries(Array.from({ length: 2000 }, (_, i) => [`k${i}`, i]));
  assert.equal(diff({}, wide).length, MAX_CHANGES);
});
