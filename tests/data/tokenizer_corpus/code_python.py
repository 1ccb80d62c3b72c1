import os
import sys


def fib(n: int) -> int:
    """Return the n-th Fibonacci number."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


class Foo(object):
	def __init__(self, x=None):
		self.x = x or {"key": [1, 2.5, -3e-7, 0x1F, 0b1010]}

    async def run(self):  # comment with trailing spaces   
        await asyncio.sleep(0.1)
        return f"{self.x!r:>10}" if self.x else None

if __name__ == "__main__":
    print(fib(int(sys.argv[1])), file=sys.stderr)
