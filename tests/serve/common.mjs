// Helpers shared by the serve checks.
export const base = `http://127.0.0.1:${process.env.PORT}`;
export let failures = 0;

export function check(ok, what) {
  if (!ok) {
    failures++;
    console.log(`FAIL: ${what}`);
  }
}

export function sameIds(a, b) {
  return Array.isArray(a) && Array.isArray(b) && a.length === b.length &&
         a.every((x, i) => x === b[i]);
}

// Waits for /health to answer 200 (503 while the model loads).
export async function healthy() {
  const t0 = Date.now();
  let seen503 = false;
  while (Date.now() - t0 < 60000) {
    try {
      const r = await fetch(`${base}/health`);
      if (r.status === 200) return seen503;
      if (r.status === 503) seen503 = true;
    } catch (e) { /* not listening yet */ }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error('server never became healthy');
}

// Prometheus text -> {"name{labels}": value}
export async function metrics() {
  const text = await (await fetch(`${base}/metrics`)).text();
  const m = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    m[line.slice(0, i)] = Number(line.slice(i + 1));
  }
  return m;
}

export function finish() {
  if (failures) {
    console.log(`${failures} check(s) failed`);
    process.exit(1);
  }
  console.log('all checks passed');
}
