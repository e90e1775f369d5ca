import { useEffect } from "react";
import { useApiKey } from "./lib/hooks";
import { match, useRoute } from "./lib/router";
import { EvaluationPage } from "./pages/EvaluationPage";
import { ModelsPage } from "./pages/ModelsPage";
import { NewRunPage } from "./pages/NewRunPage";
import { RunPage } from "./pages/RunPage";
import { RunsPage } from "./pages/RunsPage";
import { SettingsPage } from "./pages/SettingsPage";
import { UploadPage } from "./pages/UploadPage";
import { Empty } from "./components/ui";

const NAV: { to: string; label: string; prefix: string }[] = [
  { to: "#/models", label: "Models & applications", prefix: "/models" },
  { to: "#/upload", label: "Upload", prefix: "/upload" },
  { to: "#/new", label: "New run", prefix: "/new" },
  { to: "#/runs", label: "Runs", prefix: "/runs" },
  { to: "#/evaluation", label: "Evaluation", prefix: "/evaluation" },
  { to: "#/settings", label: "Settings", prefix: "/settings" },
];

function Page() {
  const { path, query } = useRoute();
  let m: Record<string, string> | null;
  if (path === "/" || path === "/models") return <ModelsPage />;
  if (path === "/upload") return <UploadPage />;
  if (path === "/new") return <NewRunPage initialDataset={query.get("dataset") ?? undefined} initialApp={query.get("app") ?? undefined} />;
  if (path === "/runs") return <RunsPage />;
  // key: a new run id mounts a fresh page (no state carried over from the previous run)
  if ((m = match("/runs/:id", path))) return <RunPage key={m.id} runId={m.id} />;
  if (path === "/evaluation") return <EvaluationPage runId={query.get("run") ?? undefined} />;
  if ((m = match("/evaluation/:id", path))) return <EvaluationPage key={m.id} runId={m.id} />;
  if (path === "/settings") return <SettingsPage />;
  return (
    <Empty title="Page not found">
      <p>There is no page at <code>{path}</code>.</p>
      <a href="#/models">Go to Models & applications</a>
    </Empty>
  );
}

export function App() {
  const { path } = useRoute();
  const key = useApiKey();
  const current = NAV.find((n) => path === n.prefix || path.startsWith(`${n.prefix}/`))?.prefix ?? (path === "/" ? "/models" : "");
  useEffect(() => {
    const label = NAV.find((n) => n.prefix === current)?.label;
    document.title = label ? `${label} · cellfoundry` : "cellfoundry";
  }, [current]);
  return (
    <div className="layout">
      <a className="skip-link" href="#main" onClick={(e) => { e.preventDefault(); document.getElementById("main")?.focus(); }}>
        Skip to content
      </a>
      <aside className="sidebar">
        <div className="brand"><span className="brand-dot" aria-hidden="true" />cellfoundry</div>
        <nav className="nav" aria-label="Main">
          {NAV.map((n) => (
            <a key={n.to} href={n.to} aria-current={current === n.prefix ? "page" : undefined}>{n.label}</a>
          ))}
        </nav>
        <div className="sidebar-foot">{key ? "API key set" : <a href="#/settings" style={{ color: "#93c5fd" }}>No API key — open Settings</a>}</div>
      </aside>
      <main className="main" id="main" tabIndex={-1}>
        <Page />
      </main>
    </div>
  );
}
