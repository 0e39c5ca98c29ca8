#!/usr/bin/env python3
"""bench/chat_fake_llm.py - tests/fakes/llm/server.py with fixed piece boundaries, for latency runs.

The fake writes each stream in pieces of random size (random.randint), sleeping --delay-ms after
each piece. That is right for tests but makes the time to the first delta of one request differ
from the next by whole delays (20 ms steps), which would swamp a sub-millisecond difference
between "direct" and "through somaagent". Here randint returns the middle of its range, so every
request with the same body is written in the same pieces at the same times; everything else is
the unmodified fake. Same arguments as the fake (--port, --chunks, --delay-ms).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fakes", "llm"))
import server  # noqa: E402


class _Fixed:
    @staticmethod
    def randint(a, b):
        return (a + b) // 2


server.random = _Fixed
if __name__ == "__main__":
    server.main()
