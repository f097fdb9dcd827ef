"""GSM8K-style math: a word problem, a worked answer, the number after `####`."""

from __future__ import annotations

import re

from engine.records import DESCRIPTION
from engine.tasks.base import Parsed, PromptSet, Task

_FINAL = re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+)")
_NUMBER = re.compile(r"-?\d[\d,]*\.?\d*|-?\.\d+")
_CALC = re.compile(r"<<[^>]*>>")  # GSM8K calculator annotations: noise for a small student
# "Question:" / "Answer:" as asked, or the wrappers small teachers use instead.
_QUESTION = re.compile(r"(?:^|\n)\s*(?:\d+[.)]\s*)?(?:\*\*)?(?:new\s+)?(?:question|problem|q)"
                       r"(?:\s*#?\d+)?\s*:(?:\*\*)?\s*:?", re.I)
_ANSWER = re.compile(r"\n\s*(?:\*\*)?(?:answer|solution|a)\s*:(?:\*\*)?\s*:?", re.I)
# "= 24" ends a step. Not a value: "= 5%", "= 5A" (algebra), "= 11th", "= 1800kg" (a
# unit written on, unchecked), "= 46 - 4 = 42" (a chain: its last step is checked), "= 18 000"
_EQUALS = re.compile(r"=\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)(?!\d|[.,]\d)(?![%A-Za-z])"
                     r"(?!\s*[-+*/×÷x]\s*\$?\d)(?!\s\d{3}(?!\d))")
_EXPR_CHARS = set("0123456789.,$ +-*/x×÷−()")
_EXPR_OK = re.compile(r"[\d.+\-*/() ]+")


def normalize_number(text: str) -> str:
    """'1,000.00' -> '1000'; '' when there is no number."""
    text = text.replace(",", "").rstrip(".")
    try:
        value = float(text)
    except ValueError:
        return ""
    return str(int(value)) if value == int(value) else f"{value:g}"


def _left_expression(text: str, end: int) -> str:
    """The arithmetic expression that ends at `end` (just before an '=')."""
    start = end
    while start > 0 and text[start - 1] in _EXPR_CHARS:
        start -= 1
    expr = re.split(r",\s", text[start:end])[-1].strip()  # "= 24, 24 * 2": a comma then a
    if expr[:1] in ("+", "*", "/", "×", "÷"):  # space ends a clause. "10 points + 14 + 6 =":
        return ""  # the expression began before a word; unchecked rather than misread
    expr = expr.lstrip("x)").strip()  # 'x' may end a word like 'box'
    for a, b in (("×", "*"), ("x", "*"), ("÷", "/"), ("−", "-"), ("$", ""), (",", "")):
        expr = expr.replace(a, b)
    return expr


def _evaluate(expr: str) -> float | None:
    """Value of a plain arithmetic expression; None if it is not one (then it is not checked)."""
    import ast
    import operator

    if not _EXPR_OK.fullmatch(expr) or not re.search(r"\d\s*[-+*/]\s*\(?\s*\d", expr):
        return None
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.USub: operator.neg}

    def walk(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in ops:
            return ops[type(node.op)](walk(node.operand))
        raise ValueError(expr)

    try:
        return walk(ast.parse(expr, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError):
        return None


def _holds(value: float, stated: str) -> bool:
    """Whether a step's stated value is its expression's: exactly for a whole number, within
    1% for a fraction the answer may have rounded (10 / 3 = 3.33)."""
    number = float(stated.replace(",", "").rstrip("."))
    if value == int(value):
        return number == value
    return abs(value - number) <= 0.01 * max(1.0, abs(value))


def check_arithmetic(answer: str, final: str) -> str:
    """Why a worked answer is wrong ("" if it is not): an `expression = value` step that does
    not hold, or a final answer the rationale never mentions. Weak teachers write confident
    nonsense; training on it teaches the student nonsense."""
    body = answer.split("####")[0]
    for match in _EQUALS.finditer(body):
        expr = _left_expression(body, match.start())
        value = _evaluate(expr)
        if value is not None and not _holds(value, match.group(1)):
            return f"wrong arithmetic: {expr} = {match.group(1)}"
    numbers = {normalize_number(n) for n in _NUMBER.findall(body)}
    if final not in numbers:
        return f"final answer {final} does not appear in the worked answer"
    return ""


def recompute_steps(question: str, answer: str) -> str:
    """The worked answer with each `expression = value` step's value worked out as a
    calculator would, and the wrong value's later uses (steps, prose, `####`) following it:
    "25 + 15 = 45 pens, 45 / 5 = 9 each. #### 9" -> "25 + 15 = 40 pens, 40 / 5 = 8 each.
    #### 8". GSM8K's own worked answers were written with a calculator; a small teacher
    chooses the steps of a problem it wrote far better than it adds. Left as it was (for the
    checks to reject) where following is ambiguous: a wrong value the question also states
    or a small one (a count, "12 months"), or a value that is not a whole number."""
    for _ in range(len(_EQUALS.findall(answer))):
        body_end = answer.find("####") if "####" in answer else len(answer)
        for match in _EQUALS.finditer(answer[:body_end]):
            value = _evaluate(_left_expression(answer, match.start()))
            stated = match.group(1).rstrip(",")  # "= 24, then": the comma is prose
            if value is None or _holds(value, stated):
                continue
            wrong = normalize_number(stated)
            if value != int(value) or wrong in _numbers(question) or wrong in FREE_NUMBERS:
                return answer
            end = match.start(1) + len(stated)
            right, after = str(int(value)), answer[end:]
            later = re.sub(rf"(?<![\d.,]){re.escape(stated)}(?![\d]|[.,]\d)", right, after)
            answer = answer[: match.start(1)] + right + later
            break
        else:
            return answer
    return answer


# Numbers a worked answer may use without the question stating them: small counts, and the
# constants of units and time ("twice", "a dozen", minutes per hour, cents per dollar).
FREE_NUMBERS = {str(i) for i in range(13)} | {"24", "30", "52", "60", "100", "365", "1000"}


def check_grounding(question: str, answer: str) -> str:
    """Why a worked answer is not about its question ("" if it is): a calculation uses a
    number that is neither in the question nor an earlier result, or a number the question
    gives is never used, or the final answer is not the result of any calculation. Small
    teachers write correct sums about other numbers ("10 boxes of 15 toys, gives away 2:
    10 * 15 = 150") and answers they only assert ("There are 21 cans left. #### 21")."""
    body = answer.split("####")[0]
    known, used, results = _numbers(question), set(), set()
    for match in _EQUALS.finditer(body):
        operands = _numbers(_left_expression(body, match.start()))
        stray = operands - known - FREE_NUMBERS
        if stray:
            return f"ungrounded: {sorted(stray)[0]} is not in the question"
        used |= operands
        results.add(normalize_number(match.group(1)))
        known.add(normalize_number(match.group(1)))
    unused = _numbers(question) - used
    if used and unused:
        return f"ungrounded: the question's {sorted(unused)[0]} is never used"
    final = extract_answer(answer)
    if final not in results:  # "There are 21 cans left. #### 21": asserted, not worked out
        return f"ungrounded: the final answer {final} is not the result of a calculation"
    return ""


def _numbers(text: str) -> set[str]:
    return {normalize_number(n) for n in _NUMBER.findall(text)} - {""}


def extract_answer(output: str) -> str:
    """The number after the last `####`, else the last number in the text, normalised."""
    finals = _FINAL.findall(output)
    if finals:
        return normalize_number(finals[-1])
    numbers = _NUMBER.findall(output)
    return normalize_number(numbers[-1]) if numbers else ""


class MathTask(Task):
    prompt_family = "math"
    checkable_answers = True
    required_fields = ("question", "answer")

    def example(self, role_row: dict) -> tuple[str, str, str]:
        answer = _CALC.sub("", str(role_row["answer"])).strip()
        return str(role_row["question"]).strip(), answer, extract_answer(answer)

    def student_messages(self, text: str) -> list[dict]:
        return [{"role": "user", "content": self.prompts.render("student", question=text)}]

    def grade(self, output: str, label: str) -> tuple[str, bool]:
        got = extract_answer(output)
        return got, bool(got) and got == normalize_number(label)

    def recomputed(self, question: str, output: str) -> str:
        return recompute_steps(question, output)

    def teacher_messages(self, row: dict, prediction: str, n: int, demos: list[dict] = (),
                         prompts: PromptSet | None = None) -> list[dict]:
        """The paper's shape: system prompt, a worked request, the request. The worked request
        is built from real seed rows like this one (`demos`: one asked about, the others as
        the answer) where the prompt file has a `teacher_answer` template, so a small teacher
        sees what "similar" means for this task; else it is the file's fixed one-shot."""
        if row["origin"] == DESCRIPTION:  # no real row to show
            return self.description_messages(row, n)
        prompts = prompts or self.prompts
        system = prompts.render("teacher_system")
        user = prompts.render("teacher_user", question=row["input"], answer=row["target"],
                                   prediction=prediction, n=n)
        if len(demos) < 2 or "teacher_answer" not in prompts.templates:
            return self._chat(system, user)
        shown = demos[1: n + 1]
        worked = prompts.render("teacher_user", question=demos[0]["input"],
                                     answer=demos[0]["target"], prediction="", n=len(shown))
        answer = "\n".join(prompts.render("teacher_answer", question=d["input"],
                                               answer=d["target"]) for d in shown)
        return [{"role": "system", "content": system}, {"role": "user", "content": worked},
                {"role": "assistant", "content": answer}, {"role": "user", "content": user}]

    @staticmethod
    def demonstrations(row: dict, pool: list[dict], k: int) -> list[dict]:
        """The k other rows of `pool` whose words overlap `row`'s most (Jaccard; ties broken
        by id): a worked example of the same kind of problem, whatever its answer."""
        words = set(row["input"].lower().split())

        def overlap(other: dict) -> float:
            theirs = set(other["input"].lower().split())
            return len(words & theirs) / max(1, len(words | theirs))
        others = [p for p in pool if p["id"] != row["id"] and p["input"] != row["input"]]
        return sorted(others, key=lambda p: (-overlap(p), p["id"]))[:k]

    def teacher_format_regex(self, row: dict, n: int, max_words: int = 60) -> str:
        # an answer of up to 8 lines, as the worked examples shown are: forced onto one line,
        # the bundled teacher dropped steps (3 boxes of 24 and 24 more: "3 * 24 = 72")
        block = (r"Question: [^\n]{10,300}\nAnswer: [^\n]{5,400}\n(?:[^\n#][^\n]{0,399}\n){0,7}"
                 r"#### -?[0-9]{1,7}\n")
        return f"({block}){{{n}}}"

    def parse_teacher(self, output: str, seed_row: dict) -> list[Parsed]:
        """Split the output into Question/Answer blocks; each needs a final `#### number`."""
        blocks = [b for b in _QUESTION.split(output)[1:] if b.strip()]
        if not blocks:
            return [Parsed(input=output.strip()[:500],
                           reject_reason="unparsed: no 'Question:' block")]
        return [self._parse_block(b) for b in blocks]

    @staticmethod
    def _parse_block(block: str) -> Parsed:
        parts = _ANSWER.split(block, maxsplit=1)
        if len(parts) != 2:
            return Parsed(input=block.strip(), reject_reason="unparsed: no 'Answer:'")
        question, answer = parts[0].strip(), parts[1].strip()
        final = _FINAL.search(answer)
        if not question or not final:
            return Parsed(input=question, reject_reason="unparsed: no '#### <number>' answer")
        answer = recompute_steps(question, answer[: final.end()].strip())  # drop chatter after
        label = extract_answer(answer)                                     # the final answer
        problem = check_arithmetic(answer, label) or check_grounding(question, answer)
        if problem:
            return Parsed(input=question, target=answer, label=label,
                          reject_reason=f"unverified: {problem}")
        return Parsed(input=question, target=answer, label=label)
