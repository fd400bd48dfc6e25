"""Every user's API tokens, for platform owners (`closure.manage_api_tokens`): listed with their
state, created (the raw value is shown once, on the page that answers the creation) and revoked
with an action. Both go through `closure.services.tokens`, which records each change as
evidence. Nobody edits or deletes a token here: its hash is never shown, its name and times
stay as issued. Imported by `closure.admin`.
"""

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers

from closure.choices import ApiTokenState
from closure.models import ApiToken
from closure.services.errors import ServiceError
from closure.services.tokens import MAX_TOKEN_DAYS, api_token_create, api_token_revoke

MANAGE_PERMISSION = "closure.manage_api_tokens"
# A token's list columns and its read-only page show the same fields (never its hash).
TOKEN_FIELDS = [
    "token_prefix",
    "name",
    "user",
    "state",
    "created_at",
    "expires_at",
    "last_used_at",
    "revoked_at",
]


class ApiTokenStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return ApiTokenState.choices

    def queryset(self, request, queryset):
        if self.value() in ApiTokenState.values:
            return queryset.in_state(self.value(), timezone.now())
        return queryset


class ApiTokenCreationForm(forms.ModelForm):
    """The inputs of `api_token_create`, with the bounds it enforces."""

    days = forms.IntegerField(
        min_value=1,
        max_value=MAX_TOKEN_DAYS,
        initial=lambda: settings.CAVRA_API_TOKEN_DAYS,
        help_text="Lifetime in days; the token stops working when it ends.",
    )

    class Meta:
        model = ApiToken
        fields = ["user", "name"]
        help_texts = {
            "user": "The token acts as this user, with exactly this user's permissions.",
            "name": "What the token is for (a pipeline, a bot), shown in every list.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["user"].queryset = (
            get_user_model().objects.filter(is_active=True).order_by("username")
        )


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = TOKEN_FIELDS
    list_filter = [ApiTokenStateFilter]
    search_fields = ["=token_prefix", "=user__username"]
    list_select_related = ["user"]
    show_full_result_count = False
    actions = ["revoke_selected"]
    readonly_fields = TOKEN_FIELDS

    @admin.display(description="state")
    def state(self, obj):
        return obj.state(timezone.now()).label

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm(MANAGE_PERMISSION)

    def has_add_permission(self, request):
        return request.user.has_perm(MANAGE_PERMISSION)

    def has_manage_permission(self, request):
        return request.user.has_perm(MANAGE_PERMISSION)

    def has_change_permission(self, request, obj=None):
        return False  # a token is revoked (the action), never edited

    def has_delete_permission(self, request, obj=None):
        return False  # a revoked token stays listed, as its evidence names it

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiTokenCreationForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        return ["user", "name", "days"] if obj is None else self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def add_view(self, request, form_url="", extra_context=None):
        # The answer to a creation is the page with the raw token, whatever button was used.
        extra_context = {
            "show_save_and_add_another": False,
            "show_save_and_continue": False,
            **(extra_context or {}),
        }
        return super().add_view(request, form_url, extra_context)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # api_token_create commits the token and its evidence in its own durable transaction;
        # the admin's usual outer transaction would nest it.
        return self._changeform_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        issued = api_token_create(
            actor=request.user,
            user=form.cleaned_data["user"],
            name=form.cleaned_data["name"],
            days=form.cleaned_data["days"],
        )
        obj.pk = issued.token.pk
        obj.refresh_from_db()
        obj.issued = issued

    def response_add(self, request, obj, post_url_continue=None):
        response = TemplateResponse(
            request,
            "admin/closure/apitoken/issued.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "API token created",
                "token": obj.issued.token,
                "raw_token": obj.issued.raw,
                "evidence": obj.issued.evidence,
            },
        )
        add_never_cache_headers(response)  # the raw token must not be kept by any cache
        return response

    @admin.action(description="Revoke selected tokens", permissions=["manage"])
    def revoke_selected(self, request, queryset):
        revoked = []
        for pk in queryset.order_by("pk").values_list("pk", flat=True):
            try:
                revoked.append(api_token_revoke(actor=request.user, token_pk=pk).token)
            except ServiceError as exc:
                self.message_user(request, f"Not revoked: {exc.detail}.", messages.WARNING)
        if revoked:
            names = ", ".join(f"{token.token_prefix}… ({token.name})" for token in revoked)
            self.message_user(
                request,
                f"Revoked {len(revoked)} token{'s' if len(revoked) != 1 else ''}: {names}.",
                messages.SUCCESS,
            )
