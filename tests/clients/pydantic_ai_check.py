"""pydantic-ai's Google model against localgem, configured only by the environment:
a plain run, a structured output through its `final_result` tool (mode ANY), and a
streamed run."""
import asyncio
import sys

from pydantic import BaseModel, Field
from pydantic_ai import Agent

from checks import check, run

MODEL = "google:gemini-2.5-flash"
SETTINGS = {"temperature": 0, "max_tokens": 40}


class City(BaseModel):
    name: str = Field(max_length=30)
    population: int = Field(ge=0, le=100_000_000)


def t_run():
    r = Agent(MODEL, instructions="Be brief.", model_settings=SETTINGS).run_sync("Say hi")
    check(isinstance(r.output, str) and r.output.strip(), f"{r.output!r}")
    check(r.usage().input_tokens > 0, f"{r.usage()}")


def t_structured_output():
    r = Agent(MODEL, output_type=City, model_settings=SETTINGS).run_sync("Biggest city in Italy?")
    check(isinstance(r.output, City), f"{r.output!r}")


def t_stream():
    agent = Agent(MODEL, model_settings=SETTINGS)

    async def go():
        async with agent.run_stream("Tell me about the sea.") as s:
            return "".join([t async for t in s.stream_text(delta=True)])
    text = asyncio.run(go())
    check(text.strip(), f"{text!r}")


sys.exit(run("pydantic_ai", [("run", t_run), ("structured_output", t_structured_output), ("stream", t_stream)]))
