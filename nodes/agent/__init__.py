"""The agent on the runtime: plugins behind one interface, and the runner that drives them.

* ``base``: what an agent plugin implements (``Agent.run``) and may ask of the
  runtime (``Context``: tools, progress notes, notifications).
* ``tools``: the tools a runtime offers its agent; sensitive ones need approval.
* ``builtin``: a deterministic agent (demo, tests); ``llm``: an agent for any
  OpenAI-compatible chat-completions endpoint with tool calls.
* ``journal``: a task's record in ``agent/tasks`` and the context that journals
  every tool call there, so a restarted runtime resumes without redoing work.
* ``runner``: watches ``shared/tasks`` and runs one trio task per task.

See docs/AGENT.md.
"""
