"""The kernels' module with one of its functions counted: which path a test's text came from."""


class Counting:
    def __init__(self, module, name: str):
        self.module, self.name, self.calls = module, name, 0

    def __getattr__(self, attr):
        value = getattr(self.module, attr)
        if attr != self.name:
            return value

        def counted(*args):
            self.calls += 1
            return value(*args)

        return counted
