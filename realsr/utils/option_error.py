"""The error of a bad option file, at the bottom layer so that every layer can raise it."""


class OptionError(ValueError):
    """Raised with every problem found in an option file."""

    def __init__(self, problems, source=None):
        self.problems = list(problems)
        where = f' in {source}' if source else ''
        lines = '\n'.join(f'  - {p}' for p in self.problems)
        super().__init__(f'{len(self.problems)} problem(s){where}:\n{lines}')
