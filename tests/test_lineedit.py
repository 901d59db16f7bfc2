"""The line editor and the Windows key decoder: keys in, outcomes and
escape sequences out. Pure, so it runs the same on every platform."""

import re
import unittest

from broadcast_chat import lineedit
from broadcast_chat.lineedit import END, INTERRUPT, NOTHING, REDRAW, SUBMIT, LineEditor, WindowsKeys


def type_keys(editor, *keys):
    """Feed each key; the outcomes, in order."""
    return [editor.feed(key) for key in keys]


def type_text(editor, text):
    for ch in text:
        editor.feed(ch)


_SEQUENCE = re.compile(r"\r|\n|\x1b\[(\d*)([A-Za-z])")


def screen_line(output, width):
    """What a terminal that is width columns wide shows on its last line
    after output, and the cursor's column: enough of one for CR, LF, erase
    line (CSI 2 K) and cursor forward (CSI n C). Fails on anything else, and
    on text that would reach the last column."""
    cells = []      # one per column; a wide character's second is ""
    column = 0

    def write(text):
        nonlocal column
        for ch in text:
            span = lineedit.char_width(ch)
            if span == 0:
                cells[column - 1] += ch     # a mark goes with the character before it
                continue
            cells[column:column + span] = [ch] + [""] * (span - 1)
            column += span
        if column >= width:
            raise AssertionError("wrote past column %d: %r" % (width - 1, output))
    position = 0
    for match in _SEQUENCE.finditer(output):
        write(output[position:match.start()])
        position = match.end()
        code = match.group(0)
        if code == "\r":
            column = 0
        elif code == "\n":
            cells, column = [], 0
        elif match.group(2) == "K" and match.group(1) == "2":
            cells = []
        elif match.group(2) == "C":
            column += int(match.group(1) or 1)
        else:
            raise AssertionError("unexpected sequence %r in %r" % (code, output))
    write(output[position:])
    return "".join(cells), column


class EditingTest(unittest.TestCase):
    def test_typing_inserts_at_the_cursor(self):
        editor = LineEditor()
        type_text(editor, "helo")
        self.assertEqual(type_keys(editor, "left", "l"), [(REDRAW, ""), (REDRAW, "")])
        self.assertEqual((editor.buffer, editor.cursor), ("hello", 4))

    def test_insert_takes_a_whole_paste(self):
        editor = LineEditor()
        editor.feed("x")
        editor.feed("home")
        self.assertEqual(editor.insert("hello "), (REDRAW, ""))
        self.assertEqual((editor.buffer, editor.cursor), ("hello x", 6))
        self.assertEqual(editor.insert("a\x1bb"), (NOTHING, ""))

    def test_a_key_name_is_never_typed_text(self):
        editor = LineEditor()
        self.assertEqual(editor.feed("left"), (NOTHING, ""))
        self.assertEqual(editor.feed("unknown"), (NOTHING, ""))
        self.assertEqual(editor.insert("left"), (REDRAW, ""))
        self.assertEqual(editor.buffer, "left")

    def test_backspace_and_delete(self):
        editor = LineEditor()
        type_text(editor, "abcd")
        type_keys(editor, "left", "left", "backspace")
        self.assertEqual((editor.buffer, editor.cursor), ("acd", 1))
        type_keys(editor, "delete")
        self.assertEqual((editor.buffer, editor.cursor), ("ad", 1))

    def test_keys_that_change_nothing_say_so(self):
        editor = LineEditor()
        self.assertEqual(type_keys(editor, "backspace", "delete", "left", "right", "home", "end"),
                         [(NOTHING, "")] * 6)
        type_text(editor, "ab")
        self.assertEqual(editor.feed("right"), (NOTHING, ""))
        self.assertEqual(editor.feed("end"), (NOTHING, ""))
        editor.feed("home")
        self.assertEqual(editor.feed("left"), (NOTHING, ""))
        self.assertEqual(editor.feed("backspace"), (NOTHING, ""))

    def test_home_and_end(self):
        editor = LineEditor()
        type_text(editor, "middle")
        editor.feed("home")
        editor.feed(">")
        editor.feed("end")
        editor.feed("<")
        self.assertEqual(editor.buffer, ">middle<")

    def test_control_characters_and_unknown_keys_are_not_inserted(self):
        editor = LineEditor()
        for key in ("\x1b", "\x07", "\x1b[2J", "\u202e", "\ud83d", "unknown", ""):
            self.assertEqual(editor.feed(key), (NOTHING, ""), repr(key))
        self.assertEqual(editor.buffer, "")

    def test_an_emoji_sequence_keeps_its_joiner(self):
        editor = LineEditor()
        for ch in "\U0001F469\u200d\U0001F4BB":
            editor.feed(ch)
        self.assertEqual(editor.buffer, "\U0001F469\u200d\U0001F4BB")

    def test_tab_calls_the_completion_hook_with_the_text_before_the_cursor(self):
        seen = []

        def complete(before):
            seen.append(before)
            return "/msg alice " if before == "/msg al" else None
        editor = LineEditor(complete=complete)
        editor.insert("/msg al hi")
        for _ in range(3):
            editor.feed("left")
        self.assertEqual(editor.feed("tab"), (REDRAW, ""))
        self.assertEqual((editor.buffer, editor.cursor), ("/msg alice  hi", 11))
        self.assertEqual(editor.feed("tab"), (NOTHING, ""))
        self.assertEqual(seen, ["/msg al", "/msg alice "])

    def test_tab_without_a_hook_does_nothing(self):
        editor = LineEditor()
        self.assertEqual(editor.feed("tab"), (NOTHING, ""))
        self.assertEqual(editor.buffer, "")


class EndingTest(unittest.TestCase):
    def test_enter_submits_the_line_and_starts_a_new_one(self):
        editor = LineEditor()
        type_text(editor, "hello")
        editor.feed("left")
        self.assertEqual(editor.feed("enter"), (SUBMIT, "hello"))
        self.assertEqual((editor.buffer, editor.cursor), ("", 0))

    def test_an_empty_line_is_submitted_too(self):
        self.assertEqual(LineEditor().feed("enter"), (SUBMIT, ""))

    def test_ctrl_c_discards_the_line(self):
        editor = LineEditor()
        type_text(editor, "half")
        self.assertEqual(editor.feed("ctrl-c"), (INTERRUPT, "half"))
        self.assertEqual(editor.buffer, "")
        self.assertEqual(editor.history, [])

    def test_ctrl_d_ends_input_on_an_empty_line_and_deletes_elsewhere(self):
        editor = LineEditor()
        type_text(editor, "ab")
        editor.feed("home")
        self.assertEqual(editor.feed("ctrl-d"), (REDRAW, ""))
        self.assertEqual(editor.buffer, "b")
        editor.feed("delete")
        self.assertEqual(editor.feed("ctrl-d"), (END, ""))

    def test_ctrl_z_then_enter_ends_input_as_on_a_windows_console(self):
        editor = LineEditor()
        self.assertEqual(editor.feed("ctrl-z"), (REDRAW, ""))
        self.assertEqual(screen_line(editor.render("> ", 80), 80), ("> ^Z", 4))
        self.assertEqual(editor.feed("enter"), (END, ""))
        self.assertEqual(editor.buffer, "")

    def test_ctrl_z_can_be_erased_before_enter(self):
        editor = LineEditor()
        editor.feed("ctrl-z")
        editor.feed("backspace")
        editor.insert("hi")
        self.assertEqual(editor.feed("enter"), (SUBMIT, "hi"))

    def test_ctrl_z_inside_a_line_is_sent_with_it(self):
        # As a Windows console does: only a line that starts with it ends input.
        editor = LineEditor()
        editor.feed("a")
        editor.feed("ctrl-z")
        self.assertEqual(editor.feed("enter"), (SUBMIT, "a\x1a"))


class HistoryTest(unittest.TestCase):
    def editor_with(self, *lines):
        editor = LineEditor()
        for line in lines:
            editor.insert(line)
            editor.feed("enter")
        return editor

    def test_up_and_down_walk_the_history_and_come_back_to_the_draft(self):
        editor = self.editor_with("one", "two")
        editor.insert("dra")
        self.assertEqual(editor.feed("up"), (REDRAW, ""))
        self.assertEqual((editor.buffer, editor.cursor), ("two", 3))
        editor.feed("up")
        self.assertEqual(editor.buffer, "one")
        self.assertEqual(editor.feed("up"), (NOTHING, ""))
        editor.feed("down")
        editor.feed("down")
        self.assertEqual((editor.buffer, editor.cursor), ("dra", 3))
        self.assertEqual(editor.feed("down"), (NOTHING, ""))

    def test_a_recalled_line_can_be_edited_and_sent(self):
        editor = self.editor_with("hello")
        editor.feed("up")
        editor.feed("!")
        self.assertEqual(editor.feed("enter"), (SUBMIT, "hello!"))
        self.assertEqual(editor.history, ["hello", "hello!"])
        self.assertEqual(editor.position, 2)

    def test_blank_lines_and_repeats_are_not_remembered(self):
        editor = self.editor_with("a", "", "   ", "a", "b", "a")
        self.assertEqual(editor.history, ["a", "b", "a"])

    def test_history_is_bounded(self):
        editor = LineEditor(history_size=3)
        for line in "abcde":
            editor.feed(line)
            editor.feed("enter")
        self.assertEqual(editor.history, ["c", "d", "e"])
        editor.feed("up")
        self.assertEqual(editor.buffer, "e")

    def test_ctrl_c_leaves_history_browsing(self):
        editor = self.editor_with("one")
        editor.feed("up")
        editor.feed("ctrl-c")
        self.assertEqual(editor.position, 1)
        self.assertEqual(editor.feed("up"), (REDRAW, ""))
        self.assertEqual(editor.buffer, "one")


class RenderTest(unittest.TestCase):
    def test_prompt_line_and_cursor(self):
        editor = LineEditor()
        type_text(editor, "hello")
        editor.feed("left")
        editor.feed("left")
        output = editor.render("bob> ", 80)
        self.assertTrue(output.startswith("\r\x1b[2K"), repr(output))
        self.assertEqual(screen_line(output, 80), ("bob> hello", 8))

    def test_the_cursor_at_the_start_of_an_empty_prompt(self):
        self.assertEqual(screen_line(LineEditor().render("", 80), 80), ("", 0))

    def test_a_chat_line_above_keeps_the_half_typed_line_and_its_cursor(self):
        editor = LineEditor()
        type_text(editor, "half typed")
        for _ in range(6):
            editor.feed("left")
        output = editor.render("bob> ", 80) + editor.render_above("12:00 <alice> hi", "bob> ", 80)
        above, below = output.rsplit("\r\n", 1)
        self.assertEqual(screen_line(above, 80)[0], "12:00 <alice> hi")
        self.assertEqual(screen_line(below, 80), ("bob> half typed", 9))

    def test_a_long_line_scrolls_to_keep_the_cursor_in_view(self):
        editor = LineEditor()
        text = "".join(chr(ord("a") + i % 26) for i in range(100))
        editor.insert(text)
        shown, column = screen_line(editor.render("> ", 20), 20)
        self.assertEqual(shown, "> " + text[100 - 16:])     # the end, and the cursor
        self.assertEqual(column, 18)                        # after it: not the last column
        editor.feed("home")
        shown, column = screen_line(editor.render("> ", 20), 20)
        self.assertEqual((shown, column), ("> " + text[:17], 2))

    def test_every_cursor_position_of_a_long_line_is_in_view(self):
        editor = LineEditor()
        text = "wide \u4e2d\u6587 and e\u0301 marks " * 5
        editor.insert(text)
        for cursor in range(len(text), -1, -1):
            editor.cursor = cursor
            shown, column = screen_line(editor.render("bob> ", 24), 24)
            self.assertTrue(shown.startswith("bob> "))
            self.assertLess(column, 23)
            # Left of the cursor on screen: the end of the text before it.
            self.assertTrue(any(lineedit.text_width(text[start:cursor]) == column - 5
                                and shown[5:].startswith(text[start:cursor])
                                for start in range(cursor + 1)), (cursor, shown, column))

    def test_wide_characters_take_two_columns(self):
        editor = LineEditor()
        editor.insert("\u4e2d\u6587")
        self.assertEqual(screen_line(editor.render("> ", 80), 80), ("> \u4e2d\u6587", 6))
        editor.feed("left")
        self.assertEqual(screen_line(editor.render("> ", 80), 80)[1], 4)

    def test_a_combining_mark_takes_no_column(self):
        editor = LineEditor()
        editor.insert("e\u0301t\u00e9")
        self.assertEqual(screen_line(editor.render("", 80), 80)[1], 3)

    def test_a_prompt_wider_than_half_the_terminal_loses_its_start(self):
        editor = LineEditor()
        editor.insert("abc")
        self.assertEqual(screen_line(editor.render("a-long-name> ", 8), 8), ("me> bc", 6))


class WindowsKeysTest(unittest.TestCase):
    def decode(self, chars):
        keys = WindowsKeys()
        return [key for ch in chars for key in keys.feed(ch)]

    def test_special_keys_come_as_a_prefix_and_a_scan_code(self):
        for prefix in ("\xe0", "\x00"):
            self.assertEqual(self.decode([ch for code in "HPKMGOS" for ch in (prefix, code)]),
                             ["up", "down", "left", "right", "home", "end", "delete"])

    def test_a_scan_code_letter_alone_is_the_letter(self):
        self.assertEqual(self.decode("HPK"), ["H", "P", "K"])

    def test_an_unknown_scan_code_is_unknown_and_does_not_eat_the_next_key(self):
        self.assertEqual(self.decode(["\xe0", "R", "a"]), ["unknown", "a"])   # Insert

    def test_control_keys(self):
        self.assertEqual(self.decode("\r\x08\t\x03\x04\x1a\x1b\x7f\x01\x05"),
                         ["enter", "backspace", "tab", "ctrl-c", "ctrl-d", "ctrl-z",
                          "unknown", "backspace", "home", "end"])

    def test_text_passes_through(self):
        self.assertEqual(self.decode("h\u00e9\u4e2d"), ["h", "\u00e9", "\u4e2d"])

    def test_a_surrogate_pair_is_one_character(self):
        # getwch() returns UTF-16 code units: a character past U+FFFF is two.
        self.assertEqual(self.decode(["\ud83d", "\ude00", "a"]), ["\U0001F600", "a"])

    def test_a_lone_surrogate_is_unknown(self):
        self.assertEqual(self.decode(["\ude00", "\ud83d", "a"]), ["unknown", "unknown", "a"])
        self.assertEqual(self.decode(["\ud83d", "\xe0", "H"]), ["unknown", "up"])

    def test_other_control_characters_are_unknown(self):
        self.assertEqual(self.decode("\x07\x0b"), ["unknown", "unknown"])

    def test_decoded_keys_drive_the_editor(self):
        editor = LineEditor()
        keys = WindowsKeys()
        outcomes = []
        for ch in "helo\xe0Kl\xe0G>\r":
            outcomes.extend(editor.feed(key) for key in keys.feed(ch))
        self.assertEqual(outcomes[-1], (SUBMIT, ">hello"))


if __name__ == "__main__":
    unittest.main()
