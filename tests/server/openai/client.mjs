// client.mjs - the official `openai` npm client against a running `mica serve`: lists the
// models, a chat completion, a streamed chat completion with include_usage, a completion,
// embeddings, a forced tool call (tool_choice required, strict arguments) streamed and not,
// and an unknown model's error. Usage: node client.mjs BASE_URL MODEL (BASE_URL ends in /v1).
// Exits 0 when every check holds, else prints what failed and exits 1. Run by
// tests/server/test_server.c.
import OpenAI from 'openai';

const [baseURL, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0 });

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

const models = await client.models.list();
const ids = [];
for await (const m of models) ids.push(m.id);
check(ids.includes(model), `models.list has ${model} (got ${ids})`);

const chat = await client.chat.completions.create({
  model,
  messages: [{ role: 'user', content: 'Once upon a time' }],
  max_tokens: 8,
  temperature: 0,
});
check(chat.object === 'chat.completion', 'chat object');
check(chat.choices[0].message.role === 'assistant', 'assistant role');
check(typeof chat.choices[0].message.content === 'string', 'content is text');
check(chat.usage.completion_tokens === 8, `usage ${JSON.stringify(chat.usage)}`);

const stream = await client.chat.completions.create({
  model,
  messages: [{ role: 'user', content: 'Once upon a time' }],
  max_tokens: 8,
  temperature: 0,
  stream: true,
  stream_options: { include_usage: true },
});
let text = '';
let usage = null;
let finish = null;
for await (const chunk of stream) {
  if (chunk.usage) usage = chunk.usage;
  for (const c of chunk.choices) {
    text += c.delta?.content ?? '';
    finish = c.finish_reason ?? finish;
  }
}
check(usage && usage.completion_tokens === 8, `stream usage ${JSON.stringify(usage)}`);
check(finish === 'length', `stream finish ${finish}`);
check(text === chat.choices[0].message.content, 'streamed text equals the non-streamed one');

const cmpl = await client.completions.create({ model, prompt: 'The dog', max_tokens: 4 });
check(cmpl.object === 'text_completion' && cmpl.choices.length === 1, 'completion');

const emb = await client.embeddings.create({ model, input: ['Once upon a time', 'The dog'] });
check(emb.data.length === 2 && emb.data[1].index === 1, 'two embeddings');
const v = emb.data[0].embedding;
check(Math.abs(Math.hypot(...v) - 1) < 1e-4, `unit length (${v.length} floats)`);

const tools = [{
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The weather in a city',
    strict: true,
    parameters: {
      type: 'object',
      properties: { city: { type: 'string', maxLength: 12 }, unit: { enum: ['celsius', 'fahrenheit'] } },
      required: ['city', 'unit'],
      additionalProperties: false,
    },
  },
}];
const ask = { model, messages: [{ role: 'user', content: 'Weather in Paris?' }], tools,
              tool_choice: 'required', max_tokens: 300, temperature: 1, seed: 7 };
const tc = await client.chat.completions.create(ask);
check(tc.choices[0].finish_reason === 'tool_calls', `tool finish ${tc.choices[0].finish_reason}`);
const call = tc.choices[0].message.tool_calls?.[0];
check(call && call.type === 'function' && call.function.name === 'get_weather', 'a get_weather call');
check(call.id.startsWith('call_'), `call id ${call.id}`);
const args = JSON.parse(call.function.arguments);
check(typeof args.city === 'string' && ['celsius', 'fahrenheit'].includes(args.unit),
      `strict arguments ${call.function.arguments}`);

const tstream = await client.chat.completions.create({ ...ask, stream: true });
const calls = [];
let tfinish = null;
for await (const chunk of tstream) {
  for (const c of chunk.choices) {
    for (const d of c.delta?.tool_calls ?? []) {
      calls[d.index] ??= { name: '', arguments: '' };
      calls[d.index].name += d.function?.name ?? '';
      calls[d.index].arguments += d.function?.arguments ?? '';
    }
    tfinish = c.finish_reason ?? tfinish;
  }
}
const want = tc.choices[0].message.tool_calls.map((c) => ({ name: c.function.name, arguments: c.function.arguments }));
check(tfinish === 'tool_calls' && JSON.stringify(calls) === JSON.stringify(want),
      `the streamed calls equal the non-streamed ones (same seed): ${JSON.stringify(calls)} vs ${JSON.stringify(want)}`);

try {
  await client.chat.completions.create({
    model: 'no-such-model',
    messages: [{ role: 'user', content: 'hi' }],
  });
  check(false, 'an unknown model must fail');
} catch (e) {
  check(e instanceof OpenAI.NotFoundError, `NotFoundError (got ${e.constructor.name})`);
  check(e.status === 404 && e.code === 'model_not_found', `404 model_not_found (${e.message})`);
}
console.log('openai client: all checks passed');
