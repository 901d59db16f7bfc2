"""The test support's own pure parts: a test that misreads a screen passes wrongly."""

import unittest

from tests.support import render


class RenderTest(unittest.TestCase):

    def test_lines_overwritten_erased_and_moved_over(self):
        self.assertEqual(render("one\r\ntwo\r\nthree"), ["one", "two", "three"])
        self.assertEqual(render("abcdef\rXY"), ["XYcdef"])
        self.assertEqual(render("abcdef\r\x1b[2Knew"), ["new"])
        self.assertEqual(render("abcdef\r\x1b[3C\x1b[K"), ["abc"])
        self.assertEqual(render("abc\x08\x08Z"), ["aZc"])
        self.assertEqual(render("abcdef\x1b[4DZ\x1b[1GY"), ["YbZdef"])

    def test_up_and_clear_to_the_end_takes_a_line_away(self):
        # The client taking the line just entered off the screen.
        self.assertEqual(render("a\r\ntty> typed\r\n\x1b[1A\r\x1b[J<tty> typed\r\ntty> "),
                         ["a", "<tty> typed", "tty>"])

    def test_colours_modes_and_the_bell_are_no_text(self):
        self.assertEqual(render("\x1b[?2004h\x1b=\x1b[1m\x1b[7mhi\x1b[0m\x07"), ["hi"])

    def test_a_sequence_still_being_written_is_not_on_the_screen_yet(self):
        for cut in ("\x1b", "\x1b[", "\x1b[2", "\x1b[?"):
            self.assertEqual(render("tty> hi" + cut), ["tty> hi"], cut)
        with self.assertRaises(AssertionError):
            render("tty> hi\x1b[2Zmore")     # a whole one it does not know still fails

    def test_what_it_cannot_show_fails(self):
        with self.assertRaises(AssertionError):
            render("\x1b[5;5H")        # cursor position: not a sequence it knows
        with self.assertRaises(AssertionError):
            render("x" * 11, width=10)


if __name__ == "__main__":
    unittest.main()
