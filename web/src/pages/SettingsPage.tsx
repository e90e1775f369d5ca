import { useState } from "react";
import { api, getApiKey, setApiKey } from "../api/client";
import { Alert, Button, Card, ErrorView, Field } from "../components/ui";

export function SettingsPage() {
  const [value, setValue] = useState(getApiKey());
  const [show, setShow] = useState(false);
  const [saved, setSaved] = useState(false);
  const [check, setCheck] = useState<{ ok: true } | { ok: false; error: unknown } | null>(null);
  const save = async () => {
    setApiKey(value.trim());
    setSaved(true);
    setCheck(null);
    if (!value.trim()) return;
    try {
      await api.runs({ limit: 1 });
      setCheck({ ok: true });
    } catch (error) {
      setCheck({ ok: false, error });
    }
  };
  return (
    <>
      <div className="page-head">
        <h1>Settings</h1>
        <p>Your API key is kept in this browser only (localStorage) and sent with each request.</p>
      </div>
      <Card title="API key">
        <form onSubmit={(e) => { e.preventDefault(); void save(); }}>
          <Field label="API key" htmlFor="api-key"
            help={<>Create one on the server with <code>cellfoundry keys create NAME</code>; <code>cellfoundry serve</code> also prints a local key at start-up.</>}>
            <input id="api-key" type={show ? "text" : "password"} autoComplete="off" spellCheck={false} value={value}
              onChange={(e) => { setValue(e.target.value); setSaved(false); }} style={{ maxWidth: 520 }} />
          </Field>
          <div className="row gap">
            <Button type="submit">Save key</Button>
            <Button variant="secondary" onClick={() => setShow((s) => !s)} aria-pressed={show}>{show ? "Hide" : "Show"} key</Button>
            <Button variant="ghost" onClick={() => { setValue(""); setApiKey(""); setSaved(true); setCheck(null); }}>Forget key</Button>
          </div>
        </form>
        {saved && !value.trim() && <Alert tone="info" title="No key stored." >Pages with your data will ask for one.</Alert>}
        {check?.ok && <Alert tone="ok" title="Key saved and accepted by the service." />}
        {check && !check.ok && <ErrorView error={check.error} title="Key saved, but the service did not accept it" />}
      </Card>
    </>
  );
}
