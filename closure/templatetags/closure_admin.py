"""Admin template tags: a date hierarchy that never scans the filtered table.

Django's date hierarchy lists the years, months or days that hold records with a
`SELECT DISTINCT` over the whole filtered changelist, which reads every row of a million-row
table. This one reads only the first and last date (one MIN/MAX aggregate, answered from the
date index) and offers every year, month or day between them.
"""

import datetime

from django import template
from django.contrib.admin.utils import get_fields_from_path
from django.db import models
from django.utils import formats, timezone
from django.utils.text import capfirst

register = template.Library()


def _local(value):
    if isinstance(value, datetime.datetime) and timezone.is_aware(value):
        return timezone.localtime(value)
    return value


@register.inclusion_tag("admin/date_hierarchy.html")
def bounded_date_hierarchy(cl):
    if not cl.date_hierarchy:
        return {"show": False}
    field_name = cl.date_hierarchy
    field = get_fields_from_path(cl.model, field_name)[-1]
    year_field, month_field, day_field = (
        f"{field_name}__{part}" for part in ("year", "month", "day")
    )
    year = cl.params.get(year_field)
    month = cl.params.get(month_field)
    day = cl.params.get(day_field)

    def link(filters):
        return cl.get_query_string(filters, [f"{field_name}__"])

    span = cl.queryset.aggregate(first=models.Min(field_name), last=models.Max(field_name))
    first, last = _local(span["first"]), _local(span["last"])
    if not (year or month or day) and first and last and first.year == last.year:
        year = first.year
        if first.month == last.month:
            month = first.month
    base = {"show": True, "field_name": field.verbose_name}
    if year and month and day:
        date = datetime.date(int(year), int(month), int(day))
        return {
            **base,
            "back": {
                "link": link({year_field: year, month_field: month}),
                "title": capfirst(formats.date_format(date, "YEAR_MONTH_FORMAT")),
            },
            "choices": [{"title": capfirst(formats.date_format(date, "MONTH_DAY_FORMAT"))}],
        }
    if year and month:
        days = range(first.day, last.day + 1) if first and last else ()
        return {
            **base,
            "back": {"link": link({year_field: year}), "title": str(year)},
            "choices": [
                {
                    "link": link({year_field: year, month_field: month, day_field: number}),
                    "title": capfirst(
                        formats.date_format(
                            datetime.date(int(year), int(month), number), "MONTH_DAY_FORMAT"
                        )
                    ),
                }
                for number in days
            ],
        }
    if year:
        months = range(first.month, last.month + 1) if first and last else ()
        return {
            **base,
            "back": {"link": link({}), "title": "All dates"},
            "choices": [
                {
                    "link": link({year_field: year, month_field: number}),
                    "title": capfirst(
                        formats.date_format(
                            datetime.date(int(year), number, 1), "YEAR_MONTH_FORMAT"
                        )
                    ),
                }
                for number in months
            ],
        }
    years = range(first.year, last.year + 1) if first and last else ()
    return {
        **base,
        "back": None,
        "choices": [
            {"link": link({year_field: str(number)}), "title": str(number)} for number in years
        ],
    }
