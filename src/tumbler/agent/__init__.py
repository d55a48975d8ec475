"""The in-sandbox agent and its host-side client. Standard library only, relative imports only:
this folder is bind-mounted into sandboxes at /.tumbler/agent and run by the image's python3.

Wire: `protocol.py` (frames). Modules: `server.py` (accept, dispatch), `sessions.py` (bash on a
pty), `execs.py` (one program to completion), `files.py`, `processes.py`, `children.py` (owned
children and the zombie reaper), `args.py` (argument checks). The host's clients of it live
outside this folder, in `tumbler.agentclient`.

Ops (args -> result; "body" is the frame's raw bytes; every error reply has a kind of
protocol.py: invalid, not_found, exists, conflict, internal):

  health             {} -> {version, agent_version, pid, uptime_s, sessions: [name]}
  shutdown           {} -> {}                   closes all sessions, then the agent exits
  session.create     {name, env: {str: str} = {}, cwd: str | null} -> {name}
  session.run        {name, command, timeout: s = 300, max_output: bytes = 64 MiB (<= 256 MiB),
                      stream: bool = false, ensure: bool = false, env = {}, cwd = null}
                     ensure: make the session (with env, cwd) if it is missing or its bash
                     has exited, in the same round trip (the default session's policy)
                     -> {exit_code: int | null, output_size, truncated, timed_out, session_alive,
                         duration_s}; body = output (empty when streamed: `output` events carry it)
  session.prestart   {env = {}, cwd = null} -> {spare: bool, pid}   a spare bash (not listed), which
                     the next session made with the same env and cwd takes over (a warm pool's
                     sandboxes: their first command starts no bash); spare false: no bash here
  session.input      {name} body = bytes typed on the terminal -> {}
  session.interrupt  {name} -> {interrupted: bool}      returns once the running command ended
  session.close      {name} -> {}
  session.list       {} -> {sessions: [{name, pid, busy, alive}]}
  exec               {argv: [str] | command: str, env = {}, cwd = null, timeout: s = 300,
                      max_output: bytes per stream = 64 MiB} body = stdin
                     -> {exit_code: int | null, timed_out, stdout_size, stderr_size, stdout_len,
                         stdout_truncated, stderr_truncated, duration_s}; body = stdout + stderr
  file.read          {path, offset = 0, length = null} -> {size}; body = bytes
  file.write         {path, append = false, mode: int | null, parents = true} body = data -> {size}
  file.stat          {path} -> {path, type: file|dir|symlink|other, size, mode, uid, gid, mtime}
  file.list          {path} -> {entries: [stat shape + name]} sorted by name
  file.remove        {path, recursive = false} -> {}
  file.chmod         {path, mode: int} -> {}
  file.mkdir         {path, parents = true} -> {}
  file.upload_tar    {path} body = tar -> {members}
  file.download_tar  {path} -> {size}; body = tar
  proc.list          {} -> {processes: [{pid, ppid, pgid, state, uid, rss_bytes, cmd}]}
  proc.signal        {pid, signal: int | name = "TERM"} -> {}
  env.make, env.reset, env.step, env.sample, env.close, env.list
                     envs hosted in the sandbox: see `envhost.py` (games in `envgames/`)
  model.enable, model.next, model.respond, model.start, model.stop, model.disable
                     an OpenAI-compatible endpoint in the sandbox answered by the host:
                     see `modelhost.py`

Exit codes follow the shell: 128 + N for a process killed by signal N; null when timed out.
"""
