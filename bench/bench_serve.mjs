// Serving benchmark: throughput and time to first token against client concurrency, measured by
// streaming clients on `helix serve` (raw HTTP, no client library). Started by bench_serve.sh.
// env: PORT, MODEL, OUT (JSON path), PER_LEVEL (requests per concurrency level), MAX_TOKENS
const base = `http://127.0.0.1:${process.env.PORT}`;
const model = process.env.MODEL;
const perLevel = Number(process.env.PER_LEVEL ?? 64);
const maxTokens = Number(process.env.MAX_TOKENS ?? 32);
const levels = (process.env.LEVELS ?? '1,2,4,8,16,32,64').split(',').map(Number);

for (let t0 = Date.now(); ;) {
  try { if ((await fetch(`${base}/health`)).status === 200) break; } catch (e) {}
  if (Date.now() - t0 > 60000) throw new Error('server not healthy');
  await new Promise((r) => setTimeout(r, 50));
}

async function one(i) {
  const t0 = performance.now();
  const r = await fetch(`${base}/v1/completions`, { method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ model, prompt: [1 + (i % 250), 5, 9, 2 + (i % 7)], max_tokens: maxTokens,
                           temperature: 0, ignore_eos: true, stream: true }) });
  if (r.status !== 200) throw new Error(`status ${r.status}`);
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let ttft = null, tokens = 0, buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let k;
    while ((k = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(6, k);
      buf = buf.slice(k + 2);
      if (ev === '[DONE]') continue;
      const n = JSON.parse(ev).choices[0]?.token_ids?.length ?? 0;
      if (n && ttft === null) ttft = performance.now() - t0;
      tokens += n;
    }
  }
  return { ttft, tokens, ms: performance.now() - t0 };
}

const pct = (a, q) => a[Math.min(a.length - 1, Math.floor(q * a.length))];
const results = [];
for (const c of levels) {
  let next = 0;
  const out = [];
  const t0 = performance.now();
  await Promise.all(Array.from({ length: c }, async () => {
    while (next < perLevel) out.push(await one(next++));
  }));
  const wall = (performance.now() - t0) / 1000;
  const ttft = out.map((o) => o.ttft).sort((a, b) => a - b);
  const tokens = out.reduce((s, o) => s + o.tokens, 0);
  const row = { concurrency: c, requests: out.length, tokens, wall_s: wall,
                tokens_per_s: tokens / wall, requests_per_s: out.length / wall,
                ttft_ms_p50: pct(ttft, 0.5), ttft_ms_p99: pct(ttft, 0.99) };
  results.push(row);
  console.log(JSON.stringify(row));
}
const fs = await import('node:fs');
fs.writeFileSync(process.env.OUT, JSON.stringify({ bench: 'serve', model, max_tokens: maxTokens,
  per_level: perLevel, flags: process.env.FLAGS, cores: (await import('node:os')).cpus().length,
  cpu: (await import('node:os')).cpus()[0].model, results }, null, 2) + '\n');
