from graph_export.token import describe_sign_in_error

CLIENT = "11111111-2222-3333-4444-555555555555"


def entra_error(code, error="invalid_client"):
    return {"error": error, "error_description": f"AADSTS{code}: something.\r\nTrace ID: x",
            "error_codes": [code], "correlation_id": "corr-1"}


def test_wrong_secret_explains_secret_value_versus_id():
    message = describe_sign_in_error(entra_error(7000215), CLIENT)
    assert "AADSTS7000215" in message and "value" in message and "secret's ID" in message
    assert CLIENT in message and "corr-1" in message and "\n" not in message


def test_expired_secret_says_create_a_new_one():
    assert "expired" in describe_sign_in_error(entra_error(7000222), CLIENT)


def test_unknown_app_points_at_client_and_tenant_ids():
    message = describe_sign_in_error(entra_error(700016, "unauthorized_client"), CLIENT)
    assert "CLIENT_ID" in message and "TENANT_ID" in message


def test_unknown_code_falls_back_to_entras_first_line():
    message = describe_sign_in_error(entra_error(12345, "weird"), CLIENT)
    assert "AADSTS12345: something." in message and "Trace ID" not in message
