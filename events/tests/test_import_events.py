from decimal import Decimal
from io import StringIO

import orjson
import pytest
from django.core.management import CommandError, call_command

from events.models import Event, Order, OrderLine, Refund, RefundLine, RejectedEvent


def run_import(path, shop, fmt, *extra) -> dict:
    out = StringIO()
    call_command(
        "import_events", str(path), "--shop", shop.domain, "--format", fmt, *extra, stdout=out
    )
    return orjson.loads(out.getvalue())


@pytest.mark.django_db
def test_taobao_rows_become_events_and_a_rerun_stores_nothing(tmp_path, shop):
    data = tmp_path / "ub.csv"
    data.write_text(
        "user_id,item_id,category_id,behavior_type,timestamp\n"
        "1,100,7,pv,1511544070\n"
        "1,100,7,pv,1511544070\n"
        "1,100,7,buy,1511544100\n"
        "2,200,8,teleport,1511544100\n"
    )

    first = run_import(data, shop, "taobao")
    again = run_import(data, shop, "taobao")

    assert first["rows"] == 4
    assert (first["stored"], first["duplicates"], first["rejected"]) == (3, 0, {"missing_field": 1})
    assert (again["stored"], again["duplicates"]) == (0, 3)
    types = list(
        Event.objects.filter(shop=shop)
        .order_by("occurred_at", "id")
        .values_list("type", "user_id", "product_id")
    )
    assert types == [
        ("product_view", "1", "100"),
        ("product_view", "1", "100"),
        ("purchase", "1", "100"),
    ]
    assert RejectedEvent.objects.filter(shop=shop).count() == 2


@pytest.mark.django_db
def test_online_retail_orders_refunds_and_adjustments(tmp_path, shop):
    data = tmp_path / "retail.csv"
    data.write_text(
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
        "536365,A1,Mug,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom\n"
        "536365,A2,Lamp,2,2010-12-01 08:27:00,10.00,17850.0,United Kingdom\n"
        "536366,B1,Damaged,-5,2010-12-01 09:00:00,0.00,,United Kingdom\n"
        "536367,C1,Tin,1,2010-12-01 10:00:00,1.25,,France\n"
        "C536368,A1,Mug,-2,2010-12-02 11:00:00,2.55,17850.0,United Kingdom\n"
        "A536369,B,Adjust bad debt,1,2010-12-02 12:00:00,-11062.06,,United Kingdom\n"
        "536365,A3,Late line,1,2010-12-01 08:30:00,5.00,17850.0,United Kingdom\n"
    )

    summary = run_import(data, shop, "online_retail")
    again = run_import(data, shop, "online_retail")

    assert summary["rows"] == 7
    assert summary["skipped"] == {"stock_adjustment": 1, "accounting_adjustment": 1}
    assert (summary["orders"], summary["refunds"]) == (3, 1)
    assert (again["orders"], again["refunds"], again["stored"]) == (0, 0, 0)
    totals = dict(Order.objects.filter(shop=shop).values_list("order_id", "total"))
    assert totals == {
        "536365": Decimal("40.30"),
        "536366": Decimal("0.00"),
        "536367": Decimal("1.25"),
    }
    assert OrderLine.objects.filter(order__order_id="536365").count() == 3
    assert Refund.objects.get(shop=shop).amount == Decimal("5.10")
    assert list(RefundLine.objects.values_list("product_id", "name", "quantity", "amount")) == [
        ("A1", "Mug", 2, Decimal("5.10"))
    ]
    purchase = Event.objects.get(shop=shop, order_id="536365")
    assert (purchase.type, purchase.user_id, purchase.revenue) == (
        "purchase",
        "17850",
        Decimal("40.30"),
    )
    assert Event.objects.get(shop=shop, order_id="536367").anonymous_id == "invoice-536367"


@pytest.mark.django_db
def test_online_retail_cancellation_lines_become_refund_lines(tmp_path, shop):
    # The real rows of order 581483 and its cancellation C581484, plus a two-line cancellation.
    data = tmp_path / "retail.csv"
    data.write_text(
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
        '581483,23843,"PAPER CRAFT , LITTLE BIRDIE",80995,2011-12-09 09:15:00,2.08,16446.0,'
        "United Kingdom\n"
        'C581484,23843,"PAPER CRAFT , LITTLE BIRDIE",-80995,2011-12-09 09:27:00,2.08,16446.0,'
        "United Kingdom\n"
        "C581490,22178,VICTORIAN GLASS HANGING T-LIGHT,-12,2011-12-09 09:57:00,1.95,14397.0,"
        "United Kingdom\n"
        "C581490,23144,ZINC T-LIGHT HOLDER STARS SMALL,-11,2011-12-09 09:57:00,0.83,14397.0,"
        "United Kingdom\n"
    )

    summary = run_import(data, shop, "online_retail")
    again = run_import(data, shop, "online_retail")

    assert (summary["orders"], summary["refunds"], summary["rows"]) == (1, 2, 4)
    assert (again["refunds"], RefundLine.objects.filter(refund__shop=shop).count()) == (0, 3)
    cancellation = Refund.objects.get(shop=shop, refund_id="C581484")
    assert cancellation.amount == Decimal("168469.60")
    assert list(
        cancellation.lines.values_list("product_id", "sku", "name", "quantity", "amount")
    ) == [("23843", "23843", "PAPER CRAFT , LITTLE BIRDIE", 80995, Decimal("168469.60"))]
    other = Refund.objects.get(shop=shop, refund_id="C581490")
    assert sorted(other.lines.values_list("product_id", "quantity", "amount")) == [
        ("22178", 12, Decimal("23.40")),
        ("23144", 11, Decimal("9.13")),
    ]
    assert other.amount == sum(line.amount for line in other.lines.all()) == Decimal("32.53")


@pytest.mark.django_db
def test_segment_jsonl_and_mapped_csv(tmp_path, shop):
    jsonl = tmp_path / "segment.jsonl"
    jsonl.write_text(
        '{"type": "track", "event": "Product Viewed", "anonymousId": "a1", "messageId": "m1",'
        ' "timestamp": "2026-01-01T00:00:00Z", "properties": {"product_id": "p1", "price": 9.5}}\n'
        "not json\n"
    )
    mapped = tmp_path / "mapped.csv"
    mapped.write_text("ts;what;who;sku\n1700000000;view;v1;p2\n")
    mapping = tmp_path / "mapping.json"
    mapping.write_text(
        '{"delimiter": ";", "types": {"view": "product_view"}, "columns": {"timestamp": "ts",'
        ' "type": "what", "anonymous_id": "who", "product.id": "sku"}}'
    )

    segment = run_import(jsonl, shop, "segment")
    generic = run_import(mapped, shop, "csv", "--mapping", str(mapping))

    assert (segment["stored"], segment["rejected"]) == (1, {"missing_field": 1})
    assert generic["stored"] == 1
    assert set(Event.objects.values_list("type", "product_id")) == {
        ("product_view", "p1"),
        ("product_view", "p2"),
    }


@pytest.mark.django_db
def test_import_refuses_unknown_shop_and_missing_file(tmp_path, shop):
    data = tmp_path / "x.csv"
    data.write_text("")

    with pytest.raises(CommandError, match="No shop"):
        call_command("import_events", str(data), "--shop", "nope.example", "--format", "taobao")
    with pytest.raises(CommandError, match="No such file"):
        call_command(
            "import_events",
            str(tmp_path / "missing.csv"),
            "--shop",
            shop.domain,
            "--format",
            "taobao",
        )
