"""`hcp province serve`: run the province reference server.

The first line on stdout is ``listening http://HOST:PORT`` (the real port when ``--port 0``), so
tests and the demo can start it as a subprocess and read where it is. Everything else goes to
stderr. Stops cleanly on Ctrl-C / SIGTERM.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sqlite3
import sys
from typing import TYPE_CHECKING

from .auth import AUTH_MODES
from .faults import parse_outage
from .profiles import PROFILES, upload_path
from .signing import SIGN_ALGS
from tools.hcp import parse_args

if TYPE_CHECKING:  # the server (and aiohttp) is imported only when serving
    from .national import NationalKeys
    from .server import ServerConfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hcp province", description="省级好差评平台参考服务 province reference server")
    sub = parser.add_subparsers(dest="command", metavar="serve")
    serve = sub.add_parser("serve", help="运行参考服务 run the reference server",
                           description="运行省级平台参考服务 run the province reference server")
    serve.add_argument("--profile", required=True, choices=list(PROFILES),
                       help="接口规范 upstream profile")
    serve.add_argument("--db", required=True, help="SQLite 文件 file for accepted records")
    serve.add_argument("--host", default="127.0.0.1", help="监听地址 listen address")
    serve.add_argument("--port", type=int, default=0, help="端口，0=自动 port, 0 = pick a free one")
    serve.add_argument("--auth", choices=AUTH_MODES, default="none", help="认证方式 authentication")
    serve.add_argument("--token", help="auth=token: X-Auth-Token 的值 value")
    serve.add_argument("--app-id", help="auth=hmac: X-App-Id")
    serve.add_argument("--secret", help="auth=hmac: 共享密钥 shared secret "
                                        "(or env HCP_PROVINCE_SECRET)")
    serve.add_argument("--sign-alg", choices=SIGN_ALGS, default="sha256",
                       help="auth=hmac: HMAC 算法 algorithm")
    serve.add_argument("--fail-rate", type=float, default=0.0, help="返回5xx的比例 share answered 500")
    serve.add_argument("--timeout-rate", type=float, default=0.0,
                       help="挂起不应答的比例 share held without answer, not stored")
    serve.add_argument("--hold-seconds", type=float, default=30.0,
                       help="挂起时长 how long a timed-out request is held (default 30)")
    serve.add_argument("--drop-response-rate", type=float, default=0.0,
                       help="已存储但断开连接的比例 share stored, then dropped without reply")
    serve.add_argument("--latency-ms", type=int, default=0, help="每个请求的延迟 added latency")
    serve.add_argument("--outage", action="append", default=[], metavar="START:SECONDS",
                       help="启动后START秒起停机SECONDS秒（可多次）503 window after start")
    serve.add_argument("--rate-limit", type=int, default=0,
                       help="每秒请求上限，超出返回429 requests per second, 0 = none")
    serve.add_argument("--seed", type=int, help="故障随机种子 seed for fault randomness")
    serve.add_argument("--province-prefix", help="sd: 办件号须带的省份前缀 case numbers must start "
                                                 "with this province code, e.g. 37")
    serve.add_argument("--catalogue", help="评价标签表 reason-tag catalogue JSON served per grade "
                                           "(default: the placeholder seed-0)")
    nat = serve.add_argument_group("national-sm2 (SM2 envelope)")
    nat.add_argument("--app-mark", help="应用标识 appMark the hall must send")
    nat.add_argument("--app-word", help="应用密钥 appWord (or env HCP_PROVINCE_APP_WORD)")
    nat.add_argument("--sm2-key", metavar="FILE", help="平台私钥 the platform's SM2 private key "
                                                       "(hex or PEM): decrypts the records")
    nat.add_argument("--sm2-hall-public-key", metavar="FILE",
                     help="大厅公钥 the hall's SM2 public key (hex or PEM): verifies its sign")
    nat.add_argument("--sm2-cipher-order", choices=("C1C3C2", "C1C2C3"), default="C1C3C2")
    nat.add_argument("--sm2-cipher-encoding", choices=("hex", "base64"), default="hex")
    nat.add_argument("--sm2-signature-format", choices=("der", "raw"), default="der")
    nat.add_argument("--sm2-signer-id", default="1234567812345678")
    nat.add_argument("--echo-values", action="store_true",
                     help="拒绝信息中回显字段值（粗心的平台如此）echo refused values in messages, "
                          "as careless platforms do")
    serve.add_argument("-v", "--verbose", action="store_true", help="逐条日志 log every request")
    return parser


async def _serve(config: ServerConfig) -> None:
    from .server import start_server

    runner, url = await start_server(config)
    print(f"listening {url}", flush=True)
    print(f"省级平台参考服务 province reference server: profile {config.profile}, "
          f"POST {url}{upload_path(config.profile)}, auth {config.auth}, db {config.db}",
          file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _national(args: argparse.Namespace) -> "NationalKeys | None":
    """The envelope keys from the options (None unless the profile is national-sm2)."""
    if args.profile != "national-sm2":
        return None
    from .national import NationalKeys
    from .sm2 import load_private, load_public
    word = args.app_word or os.environ.get("HCP_PROVINCE_APP_WORD")
    if not (args.app_mark and word and args.sm2_key and args.sm2_hall_public_key):
        raise ValueError("--profile national-sm2 needs --app-mark, --app-word, --sm2-key and "
                         "--sm2-hall-public-key")
    try:
        with open(args.sm2_key, encoding="utf-8") as f:
            private = load_private(f.read())
        with open(args.sm2_hall_public_key, encoding="utf-8") as f:
            public = load_public(f.read())
    except OSError as exc:
        raise ValueError(f"cannot read key file: {exc}") from None
    return NationalKeys(args.app_mark, word, private, public, order=args.sm2_cipher_order,
                        encoding=args.sm2_cipher_encoding,
                        signature_format=args.sm2_signature_format,
                        signer_id=args.sm2_signer_id)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `hcp province`; returns the exit code."""
    parser = _parser()
    args = parse_args(parser, argv)
    if isinstance(args, int):
        return args
    if args.command != "serve":
        parser.print_help()
        return 2
    from .server import ServerConfig

    try:
        outages = [parse_outage(text) for text in args.outage]
        config = ServerConfig(
            province_prefix=args.province_prefix, catalogue=args.catalogue,
            national=_national(args), echo_values=args.echo_values,
            profile=args.profile, db=args.db, host=args.host, port=args.port, auth=args.auth,
            token=args.token, app_id=args.app_id,
            secret=args.secret or os.environ.get("HCP_PROVINCE_SECRET"),
            sign_alg=args.sign_alg, fail_rate=args.fail_rate, timeout_rate=args.timeout_rate,
            drop_response_rate=args.drop_response_rate, latency_ms=args.latency_ms,
            outages=outages, rate_limit=args.rate_limit, seed=args.seed,
            hold_s=args.hold_seconds)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
        asyncio.run(_serve(config))
    except ValueError as exc:
        print(f"hcp province: 参数错误 bad option: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"hcp province: 无法监听 cannot listen on {args.host}:{args.port}: {exc}. "
              "换一个端口或用 --port 0 (choose another port or --port 0)", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        print(f"hcp province: 无法打开数据库 cannot open --db {args.db}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
