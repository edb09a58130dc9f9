// The Node openai package against the gateway: a streamed chat with a tool, the
// tool call accumulated from its deltas, and a streamed answer after the tool's
// result. Prints one JSON line; tests/gateway/test_openai_compat_node.py checks it.
import OpenAI from "openai";

const [baseURL, apiKey, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const tools = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "The weather in a city",
      parameters: { type: "object", properties: { city: { type: "string" } } },
    },
  },
];
const messages = [{ role: "user", content: "Weather in Paris?" }];

const stream = await client.chat.completions.create({ model, messages, tools, stream: true });
const call = { id: "", name: "", arguments: "" };
let finish = null;
for await (const chunk of stream) {
  for (const choice of chunk.choices) {
    for (const delta of choice.delta.tool_calls ?? []) {
      call.id = delta.id ?? call.id;
      call.name += delta.function?.name ?? "";
      call.arguments += delta.function?.arguments ?? "";
    }
    finish = choice.finish_reason ?? finish;
  }
}

// The SDK's own accumulation (runTools' building block) must agree.
const runner = client.beta.chat.completions.stream({ model, messages, tools });
const final = await runner.finalChatCompletion();
const accumulated = final.choices[0].message.tool_calls?.[0];

messages.push({
  role: "assistant",
  content: null,
  tool_calls: [{ id: call.id, type: "function", function: { name: call.name, arguments: call.arguments } }],
});
messages.push({ role: "tool", tool_call_id: call.id, content: "sunny" });
let answer = "";
const after = await client.chat.completions.create({ model, messages, tools, stream: true, max_tokens: 5 });
for await (const chunk of after) {
  answer += chunk.choices[0]?.delta?.content ?? "";
}
console.log(JSON.stringify({ call, finish, accumulated, answer }));
