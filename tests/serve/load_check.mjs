// Load on `helix serve` (--max-running 8 --max-waiting 16, cp 2, ep 2 with online EPLB): raw
// HTTP clients.
// Phase 1 stays under capacity (16 concurrent < 8 running + 16 waiting): no request may get 503.
// Phase 2: 64 concurrent clients drive the queue full (503 + Retry-After), a quarter of the
// streams are cancelled mid-stream. Every admitted request must be answered completely, the KV
// must be empty at the end, and /metrics must count what the clients saw.
import { base, check, healthy, metrics, finish } from './common.mjs';

const model = process.env.MODEL;
await healthy();
const stats = { done: 0, rejected: 0, cancelled: 0, tokens: 0, other: [] };

async function one(i, { stream, cancel, maxTokens }) {
  const ctl = new AbortController();
  const body = { model, prompt: [1 + (i % 200), 2 + (i % 50), 3], max_tokens: maxTokens,
                 temperature: 0, ignore_eos: true, stream,
                 stream_options: stream ? { include_usage: true } : undefined };
  let r;
  try {
    r = await fetch(`${base}/v1/completions`, { method: 'POST', body: JSON.stringify(body),
      headers: { 'Content-Type': 'application/json' }, signal: ctl.signal });
  } catch (e) {
    stats.other.push(`request ${i}: ${e}`);
    return;
  }
  if (r.status === 503) {
    const j = await r.json();
    check(j.error?.code === 'queue_full', `503 without queue_full: ${JSON.stringify(j)}`);
    check(r.headers.get('retry-after') === '1', '503 without Retry-After');
    stats.rejected++;
    await new Promise((r) => setTimeout(r, 100));  // back off (less than Retry-After: keep it full)
    return;
  }
  if (r.status !== 200) {
    stats.other.push(`request ${i}: status ${r.status} ${await r.text()}`);
    return;
  }
  if (!stream) {
    const j = await r.json();
    check(j.choices[0].token_ids.length === maxTokens && j.usage.completion_tokens === maxTokens,
          `request ${i}: ${j.choices[0].token_ids.length} tokens, expected ${maxTokens}`);
    stats.done++;
    stats.tokens += j.usage.completion_tokens;
    return;
  }
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = '', chunks = 0, ids = 0, usage = null, sawDone = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let k;
      while ((k = buf.indexOf('\n\n')) >= 0) {
        const ev = buf.slice(0, k);
        buf = buf.slice(k + 2);
        if (!ev.startsWith('data: ')) continue;
        const data = ev.slice(6);
        if (data === '[DONE]') { sawDone = true; continue; }
        const j = JSON.parse(data);
        if (j.usage) usage = j.usage;
        if (j.choices.length) ids += j.choices[0].token_ids.length;
        chunks++;
      }
      if (cancel && chunks >= 2) {
        ctl.abort();  // the client goes away mid-stream
        stats.cancelled++;
        return;
      }
    }
  } catch (e) {
    stats.other.push(`request ${i}: stream broke: ${e}`);
    return;
  }
  check(sawDone, `request ${i}: stream without [DONE]`);
  check(ids === maxTokens && usage?.completion_tokens === maxTokens,
        `request ${i}: streamed ${ids} ids, usage ${JSON.stringify(usage)}`);
  stats.done++;
  stats.tokens += usage?.completion_tokens ?? 0;
}

async function phase(clients, perClient, opts) {
  let next = 0;
  const total = clients * perClient;
  await Promise.all(Array.from({ length: clients }, async () => {
    while (next < total) {
      const i = next++;
      await one(i, opts(i));
    }
  }));
}

// Phase 1: under capacity.
await phase(16, 5, (i) => ({ stream: i % 2 === 0, cancel: false, maxTokens: 8 }));
check(stats.rejected === 0, `phase 1 (16 clients < capacity 24): ${stats.rejected} requests got 503`);
const phase1Done = stats.done;
check(phase1Done === 80, `phase 1: ${phase1Done} of 80 answered`);

// Phase 2: overload, with cancels.
await phase(64, 4, (i) => (i % 4 === 1 ? { stream: true, cancel: true, maxTokens: 400 }
                                       : { stream: i % 4 !== 3, cancel: false, maxTokens: 16 }));
check(stats.rejected > 0, 'phase 2 (64 clients > capacity 24): the queue never filled');
check(stats.other.length === 0, `unexpected outcomes:\n${stats.other.join('\n')}`);


// The engine drains: nothing running or waiting, every KV block free on every rank.
let m;
const t0 = Date.now();
do {
  m = await metrics();
  const used = Object.entries(m).filter(([k]) => k.startsWith('helix_kv_blocks_used{'));
  const reserved = Object.entries(m).filter(([k]) => k.startsWith('helix_kv_blocks_reserved{'));
  if (m.helix_requests_running === 0 && m.helix_requests_waiting === 0 &&
      used.every(([, v]) => v === 0) && reserved.every(([, v]) => v === 0) &&
      m['helix_requests_total{endpoint="completions",outcome="cancelled"}'] +
        m['helix_requests_total{endpoint="completions",outcome="ok"}'] === stats.done + stats.cancelled) break;
  await new Promise((r) => setTimeout(r, 50));
} while (Date.now() - t0 < 10000);
const used = Object.entries(m).filter(([k]) => k.startsWith('helix_kv_blocks_used{'));
check(used.length === 2, `KV used reported for ${used.length} ranks, expected 2 (cp 2)`);
for (const [k, v] of used) check(v === 0, `${k} = ${v} after the load`);
for (const [k, v] of Object.entries(m).filter(([k]) => k.startsWith('helix_kv_blocks_free{')))
  check(v === m.helix_kv_blocks_capacity, `${k} = ${v}, capacity ${m.helix_kv_blocks_capacity}`);
check(m.helix_requests_running === 0 && m.helix_requests_waiting === 0, 'requests left in the engine');
const c = (o) => m[`helix_requests_total{endpoint="completions",outcome="${o}"}`];
// A client that aborts after its second chunk races the engine: the server may have written the
// whole answer (all 400 tokens) before it saw the connection close. Such a request counts as ok
// on the server; every other abort must count as cancelled.
const late = c('ok') - stats.done;
check(late >= 0 && late <= stats.cancelled, `metrics ok ${c('ok')} vs answered ${stats.done}`);
check(c('cancelled') === stats.cancelled - late, `metrics cancelled ${c('cancelled')} != ${stats.cancelled} - ${late}`);
check(c('cancelled') > 0, 'no cancel reached the server mid-generation');
check(c('queue_full') === stats.rejected, `metrics queue_full ${c('queue_full')} != 503s ${stats.rejected}`);
check(c('error') === 0 && c('bad_request') === 0, 'errors in the metrics');
check(m.helix_completion_tokens_total === stats.tokens + 400 * late,
      `completion tokens ${m.helix_completion_tokens_total} != ${stats.tokens} + 400 x ${late}`);
check(m.helix_time_to_first_token_seconds_count === c('ok'), 'TTFT count != answered');
check(m.helix_generated_tokens_total >= stats.tokens, 'engine generated fewer tokens than returned');
// EPLB runs behind the server (--ep 2 --eplb-slots 10 --eplb-interval 8): one balance per MoE layer.
const bal = Object.entries(m).filter(([k]) => k.startsWith('helix_eplb_balance{'));
check(bal.length === 3, `EPLB balance for ${bal.length} layers, expected the 3 MoE layers`);
for (const [k, v] of bal) check(v >= 1 && v < 3, `${k} = ${v}`);
check(m.helix_prefills_total === stats.done + stats.cancelled, `prefills ${m.helix_prefills_total} != admitted ${stats.done + stats.cancelled}`);
console.log(`answered ${stats.done}, rejected ${stats.rejected}, aborted ${stats.cancelled} (${late} of them after the server had answered)`);
finish();
