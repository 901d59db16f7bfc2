"""How people give the client its server: the forms they try."""

import unittest

from tests import support  # (also puts the repository on sys.path)

from broadcast_chat.clientoptions import parse_client_args, settle_address


def settled(*argv):
    options = parse_client_args(list(argv))
    problem = settle_address(options)
    return problem or (options.host, options.port)


class AddressTest(unittest.TestCase):
    def test_the_forms_people_try(self):
        self.assertEqual(settled(), ("127.0.0.1", 5000))
        self.assertEqual(settled("chat.example", "6101"), ("chat.example", 6101))
        self.assertEqual(settled("chat.example:6101"), ("chat.example", 6101))
        self.assertEqual(settled("--host", "127.0.0.1:6101"), ("127.0.0.1", 6101))
        self.assertEqual(settled("-p", "6101"), ("127.0.0.1", 6101))
        self.assertEqual(settled("[::1]:6101"), ("::1", 6101))
        self.assertEqual(settled("::1"), ("::1", 5000))
        self.assertEqual(settled("--host", "::1", "--port", "7"), ("::1", 7))

    def test_what_cannot_be_a_server_is_said(self):
        self.assertIn("bad port 99999", settled("--port", "99999"))
        self.assertIn("bad port 0", settled("-p", "0"))
        self.assertIn("two ports", settled("chat.example:1", "--port", "2"))
        self.assertIn("once", settled("chat.example", "--host", "other"))


if __name__ == "__main__":
    unittest.main()
