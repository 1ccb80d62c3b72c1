// DeepSeek-V3's chat format: the Jinja chat_template of deepseek-ai/DeepSeek-V3's
// tokenizer_config.json written out statement by statement (same names as its namespace `ns`),
// so that the output is byte-identical to rendering that template. Its quirks are kept: system
// prompts go first whatever their position, ns.is_first is never reset between assistant turns,
// and the tool-calls closer is only written after a second call.
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace helix {

std::vector<ChatMessage> chat_messages_from_json(const nlohmann::json& messages) {
  if (!messages.is_array()) fail("chat: messages must be an array");
  auto str = [](const nlohmann::json& j, const char* key, const std::string& where) {
    if (!j.is_object() || !j.contains(key) || !j[key].is_string())
      fail("chat: {}: '{}' must be a string", where, key);
    return j[key].get<std::string>();
  };
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    const std::string where = "message " + std::to_string(i);
    ChatMessage c;
    c.role = str(m, "role", where);
    if (m.contains("content") && !m["content"].is_null()) c.content = str(m, "content", where);
    if (m.contains("tool_calls") && !m["tool_calls"].is_null()) {
      if (!m["tool_calls"].is_array()) fail("chat: {}: tool_calls must be an array", where);
      for (const auto& t : m["tool_calls"]) {
        ToolCall tc;
        if (t.is_object() && t.contains("type")) tc.type = str(t, "type", where + " tool call");
        if (!t.is_object() || !t.contains("function"))
          fail("chat: {}: a tool call needs 'function'", where);
        tc.name = str(t["function"], "name", where + " tool call");
        tc.arguments = str(t["function"], "arguments", where + " tool call");
        c.tool_calls.push_back(std::move(tc));
      }
    }
    out.push_back(std::move(c));
  }
  return out;
}

std::string Tokenizer::render_chat(const std::vector<ChatMessage>& messages,
                                   bool add_generation_prompt) const {
  struct {
    bool is_first = false, is_tool = false, is_output_first = true, is_first_sp = true;
    std::string system_prompt;
  } ns;
  auto content = [](const ChatMessage& m) -> const std::string& {
    if (!m.content) fail("chat: a '{}' message needs content", m.role);
    return *m.content;
  };
  for (const auto& m : messages) {
    if (m.role != "system" && m.role != "user" && m.role != "assistant" && m.role != "tool")
      fail("chat: unknown role '{}' (system, user, assistant or tool)", m.role);
    if (m.role == "system") {
      if (ns.is_first_sp) {
        ns.system_prompt += content(m);
        ns.is_first_sp = false;
      } else {
        ns.system_prompt += "\n\n" + content(m);
      }
    }
  }
  std::string out = bos_token() + ns.system_prompt;
  for (const auto& m : messages) {
    if (m.role == "user") {
      ns.is_tool = false;
      out += "<｜User｜>" + content(m);
    }
    if (m.role == "assistant" && !m.content) {
      ns.is_tool = false;
      if (m.tool_calls.empty()) fail("chat: an assistant message needs content or tool_calls");
      for (const auto& tool : m.tool_calls) {
        const std::string call = tool.type + "<｜tool▁sep｜>" + tool.name + "\n```json\n" +
                                 tool.arguments + "\n```<｜tool▁call▁end｜>";
        if (!ns.is_first) {
          out += "<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>" + call;
          ns.is_first = true;
        } else {
          out += "\n<｜tool▁call▁begin｜>" + call;
          out += "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>";
        }
      }
    }
    if (m.role == "assistant" && m.content) {
      if (ns.is_tool) {
        out += "<｜tool▁outputs▁end｜>" + *m.content + "<｜end▁of▁sentence｜>";
        ns.is_tool = false;
      } else {
        out += "<｜Assistant｜>" + *m.content + "<｜end▁of▁sentence｜>";
      }
    }
    if (m.role == "tool") {
      ns.is_tool = true;
      if (ns.is_output_first) {
        out += "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>" + content(m) +
               "<｜tool▁output▁end｜>";
        ns.is_output_first = false;
      } else {
        out += "\n<｜tool▁output▁begin｜>" + content(m) + "<｜tool▁output▁end｜>";
      }
    }
  }
  if (ns.is_tool) out += "<｜tool▁outputs▁end｜>";
  if (add_generation_prompt && !ns.is_tool) out += "<｜Assistant｜>";
  return out;
}

}  // namespace helix
