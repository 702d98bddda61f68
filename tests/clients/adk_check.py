"""Google's ADK against localgem, configured only by the environment
(GOOGLE_GEMINI_BASE_URL, GOOGLE_API_KEY): an agent on the default model path
(`model="gemini-2.5-flash"`, the Gemini API through google-genai) runs to its final
answer and calls a Python function tool on the way; once with generateContent (the default
StreamingMode.NONE) and once with streamGenerateContent (StreamingMode.SSE)."""
import asyncio
import sys

from google.adk.agents import Agent
from google.adk.agents.run_config import RunConfig, StreamingMode
from google.adk.runners import InMemoryRunner
from google.genai import types

from checks import check, run

called: list[str] = []


def get_weather(city: str) -> dict:
    """Returns the current weather report for a city."""
    called.append(city)
    return {"status": "success", "report": f"Sunny, 25 degrees in {city}"}


def first_call_uses_a_tool(callback_context, llm_request):
    """ADK's before-model hook: the agent's first model call must call a tool (a tiny local
    model may not choose to on its own); later calls are the model's own choice."""
    answered = any(p.function_response for c in llm_request.contents for p in (c.parts or []))
    if not answered:
        llm_request.config.tool_config = types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(mode="ANY"))
    return None


agent = Agent(
    name="weather_agent", model="gemini-2.5-flash",
    instruction="Answer weather questions with the get_weather tool.",
    tools=[get_weather], before_model_callback=first_call_uses_a_tool,
    generate_content_config=types.GenerateContentConfig(temperature=0, max_output_tokens=60))


async def one_run(mode: StreamingMode):
    runner = InMemoryRunner(agent=agent, app_name="localgem-check")
    session = await runner.session_service.create_session(app_name="localgem-check", user_id="u")
    kinds, final = [], None
    async for ev in runner.run_async(
            user_id="u", session_id=session.id,
            new_message=types.Content(role="user", parts=[types.Part(text="What is the weather in Paris?")]),
            run_config=RunConfig(streaming_mode=mode, max_llm_calls=6)):
        for p in (ev.content.parts if ev.content else None) or []:
            kinds.append("call" if p.function_call else "response" if p.function_response else "text")
        if ev.is_final_response() and ev.content and ev.content.parts:
            final = "".join(p.text or "" for p in ev.content.parts if not p.thought)
    return kinds, final


def t_agent(mode):
    def t():
        called.clear()
        kinds, final = asyncio.run(one_run(mode))
        check(called and all(isinstance(c, str) for c in called), f"the tool was not called: {kinds}")
        check("call" in kinds and "response" in kinds, f"events {kinds}")
        check(final is not None, f"no final response: {kinds}")
    return t


sys.exit(run("adk", [("agent_generate_content", t_agent(StreamingMode.NONE)),
                     ("agent_stream_generate_content", t_agent(StreamingMode.SSE))]))
