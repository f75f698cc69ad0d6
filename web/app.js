// Shows /healthz and /readyz on the status page.
async function show(id, url) {
  const el = document.getElementById(id);
  try {
    const r = await fetch(url);
    const body = await r.json();
    el.textContent = r.ok ? 'ok' : `unavailable: ${body.reason || r.status}`;
    el.className = r.ok ? 'ok' : 'bad';
  } catch (e) {
    el.textContent = `no answer (${e})`;
    el.className = 'bad';
  }
}
show('health', '/healthz');
show('ready', '/readyz');
