// The official openai npm client against `helix serve` on the embedded model: prompts as ids and
// as text, chat, streamed and not; every greedy answer must equal `helix generate` on the same
// prompt ids (EXPECTED, computed by serve_check.sh with the tokenize / render-chat CLIs). Every
// choice also carries its generated `token_ids` (a helix extension).
import { createRequire } from 'node:module';
import { base, check, sameIds, healthy, metrics, finish } from './common.mjs';

const require = createRequire(`${process.env.NPM_DIR}/node_modules/`);
const mod = require('openai');
const OpenAI = mod.OpenAI ?? mod.default ?? mod;
const model = process.env.MODEL;
const exp = JSON.parse(process.env.EXPECTED);
const cases = exp.ids;
const maxTokens = Number(process.env.MAX_TOKENS);

await healthy();
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'test-key', maxRetries: 0 });
let ok = 0;

const models = await client.models.list();
check(models.data.length === 1 && models.data[0].id === model, `models.list: ${JSON.stringify(models.data)}`);

for (const c of cases) {
  const r = await client.completions.create({ model, prompt: c.prompt, max_tokens: maxTokens, temperature: 0 });
  ok++;
  const ch = r.choices[0];
  check(sameIds(ch.token_ids, c.greedy), `completion ${c.prompt}: ${ch.token_ids} != generate ${c.greedy}`);
  check(r.usage.prompt_tokens === c.prompt.length && r.usage.completion_tokens === c.greedy.length &&
        r.usage.total_tokens === c.prompt.length + c.greedy.length, `usage ${JSON.stringify(r.usage)}`);
  check(ch.finish_reason === (c.greedy.length < maxTokens ? 'stop' : 'length'), `finish_reason ${ch.finish_reason}`);
  check(r.object === 'text_completion' && r.model === model, `object/model ${r.object} ${r.model}`);

  const s = await client.completions.create({ model, prompt: c.prompt, max_tokens: maxTokens, temperature: 0,
                                              stream: true, stream_options: { include_usage: true } });
  ok++;
  const ids = [];
  let usage = null, chunks = 0, reason = null;
  for await (const k of s) {
    chunks++;
    if (k.usage) usage = k.usage;
    if (k.choices.length) {
      ids.push(...(k.choices[0].token_ids ?? []));
      if (k.choices[0].finish_reason) reason = k.choices[0].finish_reason;
    }
  }
  check(sameIds(ids, c.greedy), `stream ${c.prompt}: ${ids} != ${c.greedy}`);
  check(chunks >= 3, `stream came in ${chunks} chunks`);
  check(reason === ch.finish_reason, `stream finish_reason ${reason}`);
  check(usage && usage.completion_tokens === c.greedy.length, `stream usage ${JSON.stringify(usage)}`);
}

for (const c of exp.text) {
  const r = await client.completions.create({ model, prompt: c.prompt, max_tokens: maxTokens, temperature: 0 });
  ok++;
  check(sameIds(r.choices[0].token_ids, c.greedy), `text completion '${c.prompt}': ids ${r.choices[0].token_ids} != ${c.greedy}`);
  check(r.choices[0].text === c.text, `text completion '${c.prompt}': ${JSON.stringify(r.choices[0].text)} != ${JSON.stringify(c.text)}`);
  check(c.text.length > 0, `'${c.prompt}': empty reference text`);
  check(r.choices[0].text === c.generate_text, `text completion '${c.prompt}': ${JSON.stringify(r.choices[0].text)} != helix generate --prompt ${JSON.stringify(c.generate_text)}`);
  const s = await client.completions.create({ model, prompt: c.prompt, max_tokens: maxTokens, temperature: 0, stream: true });
  ok++;
  let text = '';
  for await (const k of s) if (k.choices.length) text += k.choices[0].text;
  check(text === c.text, `streamed text '${c.prompt}': ${JSON.stringify(text)} != ${JSON.stringify(c.text)}`);
  // A stop string cuts the text before it (a few characters into the answer).
  const stop = c.text.slice(6, 9);
  if (stop.trim().length === 3) {
    const cut = c.text.slice(0, c.text.indexOf(stop));
    const t = await client.completions.create({ model, prompt: c.prompt, max_tokens: maxTokens, temperature: 0, stop: [stop] });
    ok++;
    check(t.choices[0].text === cut && t.choices[0].finish_reason === 'stop', `stop ${JSON.stringify(stop)}: ${JSON.stringify(t.choices[0].text)} != ${JSON.stringify(cut)}`);
    const ts = await client.completions.create({ model, prompt: c.prompt, max_tokens: maxTokens, temperature: 0, stop: stop, stream: true });
    ok++;
    let st = '', fr = null;
    for await (const k of ts) if (k.choices.length) { st += k.choices[0].text; fr = k.choices[0].finish_reason ?? fr; }
    check(st === cut && fr === 'stop', `streamed stop ${JSON.stringify(stop)}: ${JSON.stringify(st)} (${fr})`);
  }
}
for (const c of exp.chat) {
  const r = await client.chat.completions.create({ model, messages: c.messages, max_tokens: maxTokens, temperature: 0 });
  ok++;
  const m = r.choices[0].message;
  check(r.object === 'chat.completion' && m.role === 'assistant', `chat object ${r.object} role ${m.role}`);
  check(sameIds(r.choices[0].token_ids, c.greedy), `chat ids ${r.choices[0].token_ids} != ${c.greedy}`);
  check(m.content === c.text, `chat: ${JSON.stringify(m.content)} != ${JSON.stringify(c.text)}`);
  const s = await client.chat.completions.create({ model, messages: c.messages, max_tokens: maxTokens, temperature: 0, stream: true,
                                                   stream_options: { include_usage: true } });
  ok++;
  let text = '', role = null, usage = null;
  for await (const k of s) {
    if (k.usage) usage = k.usage;
    if (!k.choices.length) continue;
    role = k.choices[0].delta.role ?? role;
    text += k.choices[0].delta.content ?? '';
  }
  check(role === 'assistant' && text === c.text, `streamed chat: ${JSON.stringify(text)} (${role})`);
  check(usage && usage.completion_tokens === c.greedy.length && usage.prompt_tokens === r.usage.prompt_tokens, `chat usage ${JSON.stringify(usage)}`);
}
check(exp.chat[0].text === exp.chat_generate, `chat reference ${JSON.stringify(exp.chat[0].text)} != helix generate --chat ${JSON.stringify(exp.chat_generate)}`);
const chatOk = 2 * exp.chat.length;

// Seeded sampling is reproducible; a stop at max_tokens 1 gives one token.
const a = await client.completions.create({ model, prompt: [1, 2, 3], max_tokens: 8, temperature: 0.9, top_p: 0.9, seed: 7 });
const b = await client.completions.create({ model, prompt: [1, 2, 3], max_tokens: 8, temperature: 0.9, top_p: 0.9, seed: 7 });
ok += 2;
check(sameIds(a.choices[0].token_ids, b.choices[0].token_ids), 'same seed, same sample');
// top_k 1 leaves only the most probable token: hot sampling gives the greedy ids.
const g = await client.completions.create({ model, prompt: [1, 2, 3], max_tokens: 8, temperature: 0 });
const k1 = await client.completions.create({ model, prompt: [1, 2, 3], max_tokens: 8, temperature: 1.9, top_k: 1, seed: 5 });
ok += 2;
check(sameIds(k1.choices[0].token_ids, g.choices[0].token_ids), `top_k 1 ${JSON.stringify(k1.choices[0].token_ids)} != greedy ${JSON.stringify(g.choices[0].token_ids)}`);
const one = await client.completions.create({ model, prompt: [4, 5], max_tokens: 1, temperature: 0 });
ok++;
check(one.choices[0].token_ids.length === 1 && one.choices[0].finish_reason === 'length', 'max_tokens 1');

async function expectStatus(p, status, what, code) {
  try {
    await p;
    check(false, `${what}: no error`);
  } catch (e) {
    check(e.status === status, `${what}: status ${e.status}, expected ${status} (${e.message})`);
    if (code) check(e.code === code, `${what}: code ${e.code}, expected ${code}`);
    check(typeof e.error?.message === 'string', `${what}: no error message`);
  }
}
let bad = 0;
await expectStatus(client.completions.create({ model: 'gpt-5', prompt: [1], max_tokens: 2 }), 400, 'unknown model', 'model_not_found'); bad++;
await expectStatus(client.completions.create({ model, prompt: [1], max_tokens: -1 }), 422, 'negative max_tokens'); bad++;
await expectStatus(client.completions.create({ model, prompt: [1], max_tokens: 1e9 }), 422, 'huge max_tokens'); bad++;
await expectStatus(client.completions.create({ model, prompt: Array(1100).fill(3), max_tokens: 2 }), 422, 'prompt longer than the context', 'context_length_exceeded'); bad++;
await expectStatus(client.completions.create({ model, prompt: [1, 99999], max_tokens: 2 }), 422, 'token id out of range'); bad++;
await expectStatus(client.completions.create({ model, prompt: [1], max_tokens: 2, temperature: 'hot' }), 400, 'wrong type'); bad++;
await expectStatus(client.chat.completions.create({ model, messages: [{ role: 'wizard', content: 'hi' }], max_tokens: 2 }), 422, 'unknown chat role'); bad++;
await expectStatus(client.chat.completions.create({ model, messages: [], max_tokens: 2 }), 422, 'no messages'); bad++;
await expectStatus(client.completions.create({ model, prompt: 'word '.repeat(3000), max_tokens: 2 }), 422, 'text prompt longer than the context', 'context_length_exceeded'); bad++;
const wrongKey = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'nope', maxRetries: 0 });
await expectStatus(wrongKey.completions.create({ model, prompt: [1], max_tokens: 2 }), 401, 'wrong API key');

// Raw HTTP: bodies the client library would never send.
async function raw(body, what, status) {
  const r = await fetch(`${base}/v1/completions`, { method: 'POST', body,
    headers: { 'Content-Type': 'application/json', Authorization: 'Bearer test-key' } });
  const j = await r.json().catch(() => null);
  check(r.status === status, `${what}: status ${r.status}, expected ${status}`);
  check(j && j.error && typeof j.error.message === 'string' && typeof j.error.type === 'string',
        `${what}: not an OpenAI error object: ${JSON.stringify(j)}`);
}
await raw('{"model": "x", "prompt": [1,2', 'malformed JSON', 400); bad++;
await raw('[1,2,3]', 'not an object', 400); bad++;
await raw(`{"model": "${model}"}`, 'missing prompt', 400); bad++;
await raw(`{"model": "${model}", "prompt": 5}`, 'prompt of the wrong type', 400); bad++;
await raw(`{"model": "${model}", "prompt": [1], "stream": "yes"}`, 'stream of the wrong type', 400); bad++;
await raw(`{"model": "${model}", "prompt": [1], "n": 3}`, 'n > 1', 422); bad++;
await raw(JSON.stringify({ model, prompt: 'x'.repeat(2 << 20) }), 'oversized body', 413); bad++;

// The server is still fine, and /metrics saw exactly these requests.
const again = await client.completions.create({ model, prompt: cases[0].prompt, max_tokens: maxTokens, temperature: 0 });
ok++;
check(sameIds(again.choices[0].token_ids, cases[0].greedy), 'same answer after the errors');
const m = await metrics();
check(m['helix_requests_total{endpoint="completions",outcome="ok"}'] === ok - chatOk, `metrics ok ${m['helix_requests_total{endpoint="completions",outcome="ok"}']} != ${ok - chatOk}`);
check(m['helix_requests_total{endpoint="chat",outcome="ok"}'] === chatOk, 'metrics chat ok');
const badSeen = m['helix_requests_total{endpoint="completions",outcome="bad_request"}'] + m['helix_requests_total{endpoint="chat",outcome="bad_request"}'];
check(badSeen === bad, `metrics bad_request ${badSeen} != ${bad}`);
check(m['helix_requests_total{endpoint="completions",outcome="unauthorized"}'] === 1, 'metrics unauthorized');
check(m['helix_time_to_first_token_seconds_count'] === ok, 'TTFT histogram counts every answered request');
// The running/waiting gauges are the engine's step-boundary snapshot: the last request's reply can
// reach the client before the engine retires it, so wait (as load_check.mjs does) for the drain.
let idle = m;
for (const t0 = Date.now(); Date.now() - t0 < 10000; await new Promise((r) => setTimeout(r, 50))) {
  if (idle['helix_requests_running'] === 0 && idle['helix_requests_waiting'] === 0) break;
  idle = await metrics();
}
check(idle['helix_requests_running'] === 0 && idle['helix_requests_waiting'] === 0,
      `idle at the end: running ${idle['helix_requests_running']}, waiting ${idle['helix_requests_waiting']}`);
finish();
