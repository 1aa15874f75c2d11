/**
 * Shared cursors + a live scoreboard: every tab publishes its cursor as
 * presence in `demo.cursors` (removed by the server when the tab goes away)
 * and bumps team scores in `demo.score`.
 */
import { SODPProvider, useSodpPresence, useSodpSelector, useSodpState, useSodpStatus } from "@sodp/react";
import { memo, StrictMode, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";

interface Cursor {
  x: number;
  y: number;
  name: string;
  color: string;
}
type Cursors = Record<string, Cursor | null>;
type Score = Record<string, number>;

const params = new URLSearchParams(location.search);
const serverUrl = params.get("server") ?? `ws://${location.hostname}:7777`;
const me = params.get("name") ?? `guest-${Math.random().toString(36).slice(2, 6)}`;
const colors = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4"];
const color = colors[[...me].reduce((a, ch) => a + ch.charCodeAt(0), 0) % colors.length] as string;

function Status() {
  const status = useSodpStatus();
  return (
    <span className={`status ${status}`} data-testid="status">
      {status}
    </span>
  );
}

const CursorView = memo(function CursorView({ id, c }: { id: string; c: Cursor }) {
  return (
    <div className="cursor" data-cursor={id} style={{ left: c.x, top: c.y, borderColor: c.color }}>
      <svg width="16" height="16" viewBox="0 0 16 16" aria-hidden="true">
        <path d="M0 0 L0 14 L4 10 L7 16 L9 15 L6 9 L12 9 Z" fill={c.color} />
      </svg>
      <span style={{ background: c.color }}>{c.name}</span>
    </div>
  );
});

function Cursors() {
  const [pos, setPos] = useState({ x: 40, y: 40 });
  useEffect(() => {
    const move = (e: PointerEvent) => setPos({ x: Math.round(e.clientX), y: Math.round(e.clientY) });
    window.addEventListener("pointermove", move);
    return () => window.removeEventListener("pointermove", move);
  }, []);
  const all = useSodpPresence<Cursors>("demo.cursors", `/${me}`, { ...pos, name: me, color });
  const others = Object.entries(all ?? {}).filter((e): e is [string, Cursor] => e[0] !== me && e[1] !== null);
  return (
    <>
      <p className="who" data-testid="online">
        online: {[me, ...others.map(([id]) => id)].join(", ")}
      </p>
      {others.map(([id, c]) => (
        <CursorView key={id} id={id} c={c} />
      ))}
    </>
  );
}

function Team({ team }: { team: string }) {
  // Re-renders only when this team's score changes.
  const score = useSodpSelector<Score, number>("demo.score", (s) => s?.[team] ?? 0);
  const [, , ref] = useSodpState<Score>("demo.score");
  return (
    <div className="team">
      <h2>{team}</h2>
      <output data-score={team}>{score}</output>
      <button type="button" data-bump={team} onClick={() => ref?.setIn(`/${team}`, score + 1)}>
        +1
      </button>
    </div>
  );
}

function App() {
  return (
    <main>
      <header>
        <h1>SODP shared cursors</h1>
        <Status />
        <span className="me" style={{ color }}>
          you are {me}
        </span>
      </header>
      <section className="board">
        <Team team="red" />
        <Team team="blue" />
      </section>
      <p className="hint">Open this page in another window and move the mouse.</p>
      <Cursors />
    </main>
  );
}

const root = document.getElementById("root");
if (root) {
  createRoot(root).render(
    <StrictMode>
      <SODPProvider url={serverUrl}>
        <App />
      </SODPProvider>
    </StrictMode>,
  );
}
