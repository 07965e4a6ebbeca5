"""A local HTTPS stand-in for Coinbase Advanced Trade's order endpoints, so the real SDK
(``RESTClient``) can be tested without the internet.

* TLS with a self-signed certificate made here with ``cryptography`` (for 127.0.0.1 / localhost);
* every request must carry a valid JWT (``Authorization: Bearer``): ES256 signed by the test's
  key, header ``kid`` = the key name and a ``nonce``, claims ``sub`` = key, ``iss`` = ``cdp``,
  ``nbf``/``exp`` current, ``uri`` = ``"<METHOD> 127.0.0.1:<port><path>"``; else 401;
* answers in Coinbase's documented JSON shapes, including ``success: false`` and error bodies;
* a repeated ``client_order_id`` answers with the existing order;
* stop-limit orders (``stop_limit_stop_limit_gtc``): accepted (``OPEN``, ``trigger_status``
  ``STOP_PENDING``), refused when the last price is already through the stop, listed, cancelled,
  and triggered when a test moves the price through the stop (:meth:`CoinbaseStandIn.move`):
  ``STOP_TRIGGERED``, then a limit order that fills when marketable, in parts if the test says;
* the public market ticker (``GET /market/products/{id}/ticker``, no JWT needed, as on Coinbase):
  the trades a test added with :meth:`CoinbaseStandIn.trade`, newest first, and the best bid/ask;
* failures queued by the test: ``429`` (with Retry-After), ``500``, ``503``, ``timeout`` (no effect,
  answers too late), ``timeout_after_create`` (creates the order, then answers too late) and
  ``garbage`` (HTTP 200 with a body that is not JSON);
* standing troubles a test switches on: a revoked key (``revoked``: every private request 401)
  and orders the exchange has lost (``lost``: ``get_order`` answers 404).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PREFIX = "/api/v3/brokerage"
STOP_LIMIT = "stop_limit_stop_limit_gtc"
TAKER_FEE, MAKER_FEE = Decimal("0.006"), Decimal("0.004")
FEE_PRECISION = Decimal("1E-8")


def product_json(
    product_id: str,
    *,
    base_increment: str = "0.00000001",
    quote_increment: str = "0.01",
    base_min_size: str = "0.00000001",
    quote_min_size: str = "1",
    base_max_size: str = "3400",
    quote_max_size: str = "150000000",
    **flags: Any,
) -> dict:
    """A product as ``GET /api/v3/brokerage/products/{id}`` answers it; ``flags`` override
    ``status``, ``is_disabled``, ``trading_disabled``, ``cancel_only``, ``limit_only``,
    ``post_only``."""
    base, quote = product_id.split("-")
    return {
        "product_id": product_id, "price": "", "price_percentage_change_24h": "",
        "volume_24h": "", "volume_percentage_change_24h": "",
        "base_increment": base_increment, "quote_increment": quote_increment,
        "quote_min_size": quote_min_size, "quote_max_size": quote_max_size,
        "base_min_size": base_min_size, "base_max_size": base_max_size,
        "base_name": base, "quote_name": quote, "watched": False, "is_disabled": False,
        "new": False, "status": "online", "cancel_only": False, "limit_only": False,
        "post_only": False, "trading_disabled": False, "auction_mode": False,
        "product_type": "SPOT", "quote_currency_id": quote, "base_currency_id": base,
        "base_display_symbol": base, "quote_display_symbol": quote,
    } | flags  # fmt: skip


#: What the stand-in lists by default (Coinbase's rules in 2026-11; ETH-BTC's differ from the
#: bots file's on purpose: minimum size 0.00022, price increment 0.00001).
PRODUCTS = {
    "BTC-USD": product_json("BTC-USD"),
    "ETH-USD": product_json("ETH-USD", base_min_size="0.00000001", base_max_size="44000"),
    "ETH-BTC": product_json(
        "ETH-BTC", quote_increment="0.00001", base_min_size="0.00022",
        quote_min_size="0.00001", base_max_size="2600", quote_max_size="200",
    ),
}  # fmt: skip


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate (its own CA) for 127.0.0.1 and localhost: (cert, key) files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tranche coinbase stand-in")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "standin-cert.pem", directory / "standin-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@dataclass(frozen=True)
class ApiKey:
    name: str
    secret: str
    """The PEM private key, as Coinbase hands it out."""
    public_key: Any


def make_api_key() -> ApiKey:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    name = f"organizations/{uuid.uuid4()}/apiKeys/{uuid.uuid4()}"
    return ApiKey(name, pem, key.public_key())


@dataclass
class StandInOrder:
    order_id: str
    client_order_id: str
    product_id: str
    side: str
    configuration: dict
    status: str
    created_time: str
    fills: list[dict] = field(default_factory=list)
    fee_inside: bool = False
    """Its quote-sized fills report the quote amount with the fee inside."""
    triggered: bool = False
    """A stop-limit order whose stop price the last trade reached."""

    def _amounts(self) -> tuple[Decimal, Decimal]:
        """(base filled, quote value without fees); a reversal takes its fill back."""
        base = value = Decimal(0)
        for f in self.fills:
            size, price = Decimal(f["size"]), Decimal(f["price"])
            if f["size_in_quote"] and self.fee_inside:
                size -= Decimal(f["commission"])
            sign = -1 if f["trade_type"] == "REVERSAL" else 1
            base += sign * (size / price if f["size_in_quote"] else size)
            value += sign * (size if f["size_in_quote"] else size * price)
        return base, value

    @property
    def filled_size(self) -> Decimal:
        return self._amounts()[0]

    @property
    def filled_value(self) -> Decimal:
        return self._amounts()[1]

    def as_json(self) -> dict:
        kind = (
            "MARKET" if "market_market_ioc" in self.configuration
            else "STOP_LIMIT" if STOP_LIMIT in self.configuration
            else "LIMIT"
        )  # fmt: skip
        trigger = "INVALID_ORDER_TYPE"
        if kind == "STOP_LIMIT":
            trigger = "STOP_TRIGGERED" if self.triggered else "STOP_PENDING"
        fees = sum((Decimal(f["commission"]) for f in self.fills), Decimal(0))
        terms = next(iter(self.configuration.values()))
        ordered = Decimal(terms.get("base_size") or 0)
        filled, value = self.filled_size, self.filled_value
        average = (value / filled).quantize(Decimal("1E-8")) if filled else Decimal(0)
        if ordered:
            completion = filled / ordered * 100
        else:  # quote-sized: how much of the quote (fees included) was spent
            completion = (value + fees) / Decimal(terms["quote_size"]) * 100
        in_quote = "quote_size" in terms
        return {
            "order_id": self.order_id, "product_id": self.product_id, "user_id": "user-1",
            "order_configuration": self.configuration, "side": self.side,
            "client_order_id": self.client_order_id, "status": self.status,
            "time_in_force": "IMMEDIATE_OR_CANCEL" if kind == "MARKET" else "GOOD_UNTIL_CANCELLED",
            "created_time": self.created_time,
            "completion_percentage": str(completion.quantize(Decimal("0.01"))),
            "filled_size": str(filled), "average_filled_price": str(average),
            "fee": "", "number_of_fills": str(len(self.fills)), "filled_value": str(value),
            "pending_cancel": self.status == "CANCEL_QUEUED", "size_in_quote": in_quote,
            "total_fees": str(fees), "size_inclusive_of_fees": in_quote,
            "total_value_after_fees": str(value + fees if self.side == "BUY" else value - fees),
            "trigger_status": trigger,
            "order_type": kind, "reject_reason": "", "settled": self.status == "FILLED",
            "product_type": "SPOT", "reject_message": "", "cancel_message": "",
            "order_placement_source": "RETAIL_ADVANCED", "outstanding_hold_amount": "0",
        }  # fmt: skip


class CoinbaseStandIn:
    def __init__(
        self, key: ApiKey, directory: Path, price: str = "50000", answer_late_s: float = 3
    ):
        self.key = key
        self.price = Decimal(price)
        self.answer_late_s = answer_late_s
        self.orders: dict[str, StandInOrder] = {}
        self.faults: deque[str] = deque()
        self.reject_next: str | None = None
        self.products: dict[str, dict] = {k: dict(v) for k, v in PRODUCTS.items()}
        self.page_size = 100
        self.fill_size_includes_fee = False
        """Report a quote-sized fill's quote amount with its fee inside."""
        self.market_fills = 1
        """A market order fills in this many fills (the same price, the size split evenly)."""
        self.fills_listed_late = 0
        """The list of fills leaves the newest fill of an order with several out of this many
        answers (Coinbase lists a fill a moment after the order says it is filled)."""
        self._late_answers: dict[str, int] = {}
        self.revoked = False
        """The key was revoked: every private request answers 401."""
        self.lost: set[str] = set()
        """Order ids the exchange answers 404 for (an order it has lost)."""
        self.requests: list[tuple[str, str]] = []
        self.trades: dict[str, list[dict]] = {}
        self._trade_ids = 0
        self.auth_failures: list[str] = []
        self.lock = threading.Lock()
        self.cert_file, key_file = make_certificate(directory)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, key_file)
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                standin.handle(self, "GET")

            def do_POST(self) -> None:
                standin.handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> CoinbaseStandIn:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- test controls ------------------------------------------------------------------------

    def fill(self, order_id: str, size: str, price: str | None = None) -> None:
        """A resting limit order fills ``size`` (base) as maker; fully filled → FILLED."""
        with self.lock:
            order = self.orders[order_id]
            limit = order.configuration["limit_limit_gtc"]
            self._add_fill(order, Decimal(size), Decimal(price or limit["limit_price"]), "MAKER")
            if order.filled_size >= Decimal(limit["base_size"]):
                order.status = "FILLED"

    def move(self, price: str, fill_size: str | None = None) -> list[str]:
        """The last trade price moves to ``price``: every resting stop-limit order it reaches
        triggers, and every triggered one whose limit it is at or through fills ``fill_size``
        (default: all that remains) at ``price`` as taker. Returns the order ids that filled."""
        with self.lock:
            self.price = last = Decimal(price)
            filled = []
            for order in self.orders.values():
                terms = order.configuration.get(STOP_LIMIT)
                if terms is None or order.status != "OPEN":
                    continue
                stop, limit = Decimal(terms["stop_price"]), Decimal(terms["limit_price"])
                down = terms["stop_direction"] == "STOP_DIRECTION_STOP_DOWN"
                if not order.triggered and (last <= stop if down else last >= stop):
                    order.triggered = True
                marketable = last >= limit if order.side == "SELL" else last <= limit
                if not (order.triggered and marketable):
                    continue
                remaining = Decimal(terms["base_size"]) - order.filled_size
                size = min(Decimal(fill_size), remaining) if fill_size else remaining
                self._add_fill(order, size, last, "TAKER")
                if order.filled_size >= Decimal(terms["base_size"]):
                    order.status = "FILLED"
                filled.append(order.order_id)
            return filled

    def set_status(self, order_id: str, status: str) -> None:
        """The order's status as Coinbase would report it next (any documented status)."""
        with self.lock:
            self.orders[order_id].status = status

    def adjust(self, order_id: str, trade_type: str, price: str | None = None) -> dict:
        """An adjustment of the order's last fill, as Coinbase lists it: the same ``trade_id``,
        a new ``entry_id``, ``trade_type`` ``REVERSAL`` (the fill undone) or ``CORRECTION``
        (the fill as it should have been, at ``price``)."""
        with self.lock:
            order = self.orders[order_id]
            adjusted = dict(order.fills[-1]) | {
                "entry_id": str(uuid.uuid4()), "trade_type": trade_type,
                "sequence_timestamp": dt.datetime.now(dt.UTC).isoformat(),
            }  # fmt: skip
            if price is not None:
                adjusted["price"] = price
            order.fills.append(adjusted)
            return adjusted

    def trade(self, product_id: str, price: str, at: dt.datetime | None = None) -> dict:
        """A trade on the public tape (``at``: its exchange time, default now)."""
        with self.lock:
            self._trade_ids += 1
            trade = {
                "trade_id": str(self._trade_ids), "product_id": product_id, "price": price,
                "size": "0.01", "side": "BUY", "bid": "", "ask": "",
                "time": (at or dt.datetime.now(dt.UTC)).isoformat().replace("+00:00", "Z"),
            }  # fmt: skip
            self.trades.setdefault(product_id, []).append(trade)
            return trade

    # -- HTTP ---------------------------------------------------------------------------------

    def handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(request.path)
        length = int(request.headers.get("Content-Length") or 0)
        body = json.loads(request.rfile.read(length) or b"{}") if length else {}
        with self.lock:
            self.requests.append((method, url.path))
        public = url.path.startswith(f"{PREFIX}/market/")
        problem = (
            None
            if public
            else self.check_jwt(request.headers.get("Authorization", ""), method, url.path)
        )
        if not public and self.revoked:
            problem = "the key was revoked"
        if problem:
            self.auth_failures.append(problem)
            return self.send(request, 401, {"error": "UNAUTHENTICATED", "message": problem})
        fault = self.faults.popleft() if self.faults else None
        if fault in ("429", "500", "503"):
            headers = {"Retry-After": "1"} if fault == "429" else {}
            error = {"429": "RATE_LIMIT_EXCEEDED", "500": "INTERNAL", "503": "UNAVAILABLE"}
            return self.send(
                request, int(fault), {"error": error[fault], "message": fault}, headers
            )
        if fault == "garbage":
            body = b"<html>upstream hiccup</html>"
            request.send_response(200)
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body)
            return None
        if fault == "timeout":
            time.sleep(self.answer_late_s)
            return self.send(request, 503, {"error": "UNAVAILABLE", "message": "too late"})
        status, answer = self.route(method, url.path, parse_qs(url.query), body)
        if fault == "timeout_after_create":
            time.sleep(self.answer_late_s)
        return self.send(request, status, answer)

    def check_jwt(self, header: str, method: str, path: str) -> str | None:
        if not header.startswith("Bearer "):
            return "no bearer token"
        token = header.removeprefix("Bearer ")
        try:
            head = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token,
                self.key.public_key,
                algorithms=["ES256"],
                options={"require": ["sub", "iss", "nbf", "exp", "uri"]},
            )
        except jwt.PyJWTError as error:
            return f"invalid token: {error}"
        expected_uri = f"{method} {self.base_url}{path}"
        checks = {
            "kid": head.get("kid") == self.key.name,
            "nonce": bool(head.get("nonce")),
            "sub": claims.get("sub") == self.key.name,
            "iss": claims.get("iss") == "cdp",
            "uri": claims.get("uri") == expected_uri,
            "lifetime": claims["exp"] - claims["nbf"] <= 120,
        }
        failed = [name for name, ok in checks.items() if not ok]
        return f"bad claims: {failed}" if failed else None

    def send(
        self,
        request: BaseHTTPRequestHandler,
        status: int,
        body: dict,
        headers: dict | None = None,
    ) -> None:
        data = json.dumps(body).encode()
        try:
            request.send_response(status)
            request.send_header("Content-Type", "application/json")
            request.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                request.send_header(name, value)
            request.end_headers()
            request.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the client gave up (a timeout test)

    def route(self, method: str, path: str, query: dict, body: dict) -> tuple[int, dict]:
        with self.lock:
            if method == "GET" and path.startswith(f"{PREFIX}/market/products/"):
                product_id = path.split("/")[-2]
                if not path.endswith("/ticker") or product_id not in self.trades:
                    return 404, {"error": "NOT_FOUND", "message": f"no product {product_id}"}
                limit = int(query.get("limit", ["100"])[0])
                tape = self.trades[product_id]
                last = Decimal(tape[-1]["price"]) if tape else self.price
                return 200, {
                    "trades": list(reversed(tape))[:limit],
                    "best_bid": str(last - 1), "best_ask": str(last + 1),
                }  # fmt: skip
            if method == "GET" and path.startswith(f"{PREFIX}/products/"):
                product = self.products.get(path.rsplit("/", 1)[-1])
                if product is None:
                    return 404, {"error": "NOT_FOUND", "message": "product not found"}
                return 200, product
            if method == "POST" and path == f"{PREFIX}/orders":
                return self.create(body)
            if method == "POST" and path == f"{PREFIX}/orders/batch_cancel":
                results = []
                for order_id in body.get("order_ids", []):
                    order = self.orders.get(order_id)
                    ok = order is not None and order.status == "OPEN"
                    if ok:
                        order.status = "CANCELLED"  # type: ignore[union-attr]
                    results.append(
                        {"success": ok, "order_id": order_id, "failure_reason":
                         "UNKNOWN_CANCEL_FAILURE_REASON" if ok else "UNKNOWN_CANCEL_ORDER"}
                    )  # fmt: skip
                return 200, {"results": results}
            if method == "GET" and path == f"{PREFIX}/orders/historical/batch":
                start = query.get("start_date", [""])[0]
                orders = [
                    o for o in reversed(list(self.orders.values()))  # newest first
                    if ("order_ids" not in query or o.order_id in query["order_ids"])
                    and ("product_ids" not in query or o.product_id in query["product_ids"])
                    and ("order_status" not in query or o.status in query["order_status"])
                    and (not start or o.created_time >= start)
                ]  # fmt: skip
                page, cursor = self.page(orders, query)
                return 200, {
                    "orders": [o.as_json() for o in page], "sequence": "0",
                    "has_next": bool(cursor), "cursor": cursor,
                }  # fmt: skip
            if method == "GET" and path == f"{PREFIX}/orders/historical/fills":
                fills = [
                    f for o in self.orders.values() for f in o.fills
                    if ("order_ids" not in query or o.order_id in query["order_ids"])
                    and ("product_ids" not in query or o.product_id in query["product_ids"])
                ]  # fmt: skip
                fills = [f for f in fills if not self._listed_later(f)]
                page, cursor = self.page(fills, query)
                return 200, {"fills": page, "cursor": cursor}
            if method == "GET" and path.startswith(f"{PREFIX}/orders/historical/"):
                order = self.orders.get(path.rsplit("/", 1)[-1])
                if order is None or order.order_id in self.lost:
                    return 404, {"error": "NOT_FOUND", "message": "order not found"}
                return 200, {"order": order.as_json()}
            return 404, {"error": "NOT_FOUND", "message": f"no route {method} {path}"}

    def page(self, items: list, query: dict) -> tuple[list, str]:
        """One page of ``limit`` (default and at most ``page_size``) from ``cursor`` (an
        offset, opaque to the client); the next cursor, empty at the end."""
        limit = min(int(query.get("limit", [self.page_size])[0]), self.page_size)
        offset = int(query.get("cursor", ["0"])[0] or 0)
        following = offset + limit
        return items[offset:following], str(following) if following < len(items) else ""

    def create(self, body: dict) -> tuple[int, dict]:
        cid = body.get("client_order_id")
        if not cid:
            return 400, {"error": "INVALID_ARGUMENT", "message": "client_order_id is required"}
        for order in self.orders.values():
            if order.client_order_id == cid:  # Coinbase answers with the existing order
                return 200, self.created(order)
        if self.reject_next:
            code, self.reject_next = self.reject_next, None
            return 200, {
                "success": False, "failure_reason": "UNKNOWN_FAILURE_REASON", "order_id": "",
                "error_response": {
                    "error": code, "message": "Insufficient balance in source account",
                    "error_details": "", "preview_failure_reason": f"PREVIEW_{code}",
                },
                "order_configuration": body["order_configuration"],
            }  # fmt: skip
        configuration = body["order_configuration"]
        problem = self.refusal(body["product_id"], configuration)
        if problem is not None:
            error, preview, message = problem
            return 200, {
                "success": False, "failure_reason": "UNKNOWN_FAILURE_REASON", "order_id": "",
                "error_response": {
                    "error": error, "message": message, "error_details": message,
                    "preview_failure_reason": preview,
                },
                "order_configuration": configuration,
            }  # fmt: skip
        order = StandInOrder(
            order_id=str(uuid.uuid4()), client_order_id=cid, product_id=body["product_id"],
            side=body["side"], configuration=configuration, status="OPEN",
            created_time=dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        )  # fmt: skip
        self.orders[order.order_id] = order
        market = configuration.get("market_market_ioc")
        if market is not None:
            if "quote_size" in market:
                # The quote size includes the fee (size_inclusive_of_fees): the base bought is
                # what the rest buys, on the product's increment; the fill is reported in quote.
                increment = Decimal(self.products[order.product_id]["base_increment"])
                spendable = Decimal(market["quote_size"]) / (1 + TAKER_FEE)
                base = (spendable / self.price).quantize(increment, ROUND_DOWN)
                for part in self._parts(base, increment):
                    self._add_fill(order, part * self.price, self.price, "TAKER", True)
                    if self.fill_size_includes_fee:  # the other way to report the same fill
                        order.fee_inside = True
                        fill = order.fills[-1]
                        fill["size"] = str(Decimal(fill["size"]) + Decimal(fill["commission"]))
            else:
                self._add_fill(order, Decimal(market["base_size"]), self.price, "TAKER")
            order.status = "FILLED"
        return 200, self.created(order)

    def _parts(self, base: Decimal, increment: Decimal) -> list[Decimal]:
        """``base`` in :attr:`market_fills` parts on the increment (the last takes the rest)."""
        share = (base / self.market_fills).quantize(increment, ROUND_DOWN)
        return [share] * (self.market_fills - 1) + [base - share * (self.market_fills - 1)]

    def _listed_later(self, fill: dict) -> bool:
        """Whether the list leaves ``fill`` out this time (:attr:`fills_listed_late`)."""
        order = self.orders[fill["order_id"]]
        if fill is not order.fills[-1] or len(order.fills) < 2:
            return False
        answered = self._late_answers.get(order.order_id, 0)
        if answered >= self.fills_listed_late:
            return False
        self._late_answers[order.order_id] = answered + 1
        return True

    def refusal(self, product_id: str, configuration: dict) -> tuple[str, str, str] | None:
        """Coinbase's answer to an order its product's rules refuse: (error, preview failure
        reason, message); ``None``: acceptable."""
        product = self.products.get(product_id)
        if product is None:
            return ("INVALID_PRODUCT_ID", "PREVIEW_INVALID_PRODUCT_ID", "invalid product_id")
        if product["cancel_only"] or product["trading_disabled"] or product["is_disabled"]:
            return ("ORDER_ENTRY_DISABLED", "PREVIEW_ORDER_ENTRY_DISABLED", "trading disabled")
        terms = next(iter(configuration.values()))
        if product["limit_only"] and "market_market_ioc" in configuration:
            return ("UNSUPPORTED_ORDER_CONFIGURATION", "PREVIEW_LIMIT_ONLY", "limit only")
        base = Decimal(terms["base_size"]) if "base_size" in terms else None
        quote = Decimal(terms["quote_size"]) if "quote_size" in terms else None
        for name, preview in (("limit_price", ""), ("stop_price", "_STOP")):
            value = Decimal(terms[name]) if name in terms else None
            if value is not None and value % Decimal(product["quote_increment"]):
                return (
                    "INVALID_PRICE_PRECISION", f"PREVIEW_INVALID{preview}_PRICE_PRECISION",
                    f"{name.replace('_', ' ')} {value} is not a multiple of "
                    f"{product['quote_increment']}",
                )  # fmt: skip
        stop = Decimal(terms["stop_price"]) if "stop_price" in terms else None
        if (
            stop is not None
            and terms.get("stop_direction") == "STOP_DIRECTION_STOP_DOWN"
            and (stop >= self.price)
        ):
            return (
                "UNKNOWN_FAILURE_REASON",
                "PREVIEW_STOP_PRICE_ABOVE_LAST_TRADE_PRICE",
                f"stop price {stop} is at or above the last trade price {self.price}",
            )  # fmt: skip
        if base is not None and base % Decimal(product["base_increment"]):
            return (
                "INVALID_SIZE_PRECISION", "PREVIEW_INVALID_SIZE_PRECISION",
                f"size {base} is not a multiple of {product['base_increment']}",
            )  # fmt: skip
        if base is not None and base < Decimal(product["base_min_size"]):
            return (
                "UNKNOWN_FAILURE_REASON", "PREVIEW_INVALID_BASE_SIZE_TOO_SMALL",
                f"size {base} is below the minimum {product['base_min_size']}",
            )  # fmt: skip
        if quote is not None and quote < Decimal(product["quote_min_size"]):
            return (
                "UNKNOWN_FAILURE_REASON", "PREVIEW_INVALID_QUOTE_SIZE_TOO_SMALL",
                f"quote size {quote} is below the minimum {product['quote_min_size']}",
            )  # fmt: skip
        return None

    @staticmethod
    def created(order: StandInOrder) -> dict:
        return {
            "success": True,
            "success_response": {
                "order_id": order.order_id, "product_id": order.product_id,
                "side": order.side, "client_order_id": order.client_order_id,
            },
            "order_configuration": order.configuration,
        }  # fmt: skip

    def _add_fill(
        self, order: StandInOrder, size: Decimal, price: Decimal, liquidity: str, in_quote=False
    ) -> None:
        notional = size if in_quote else size * price
        rate = TAKER_FEE if liquidity == "TAKER" else MAKER_FEE
        order.fills.append(
            {
                "entry_id": str(uuid.uuid4()), "trade_id": str(uuid.uuid4()),
                "order_id": order.order_id,
                "trade_time": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
                "trade_type": "FILL", "price": str(price), "size": str(size),
                # Coinbase reports the fee at the quote currency's precision, not in cents.
                "commission": str((notional * rate).quantize(FEE_PRECISION, ROUND_UP)),
                "product_id": order.product_id,
                "sequence_timestamp": dt.datetime.now(dt.UTC).isoformat(),
                "liquidity_indicator": liquidity, "size_in_quote": in_quote,
                "user_id": "user-1", "side": order.side,
            }
        )  # fmt: skip
