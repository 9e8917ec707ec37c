"""What the sandbox tests share: the machine's variables that would steer azure-identity elsewhere."""

#: Variables that would make azure-identity pick another credential or another managed identity source.
FOREIGN_ENV = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
               "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST", "MSI_ENDPOINT", "MSI_SECRET",
               "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "AZURE_POD_IDENTITY_AUTHORITY_HOST")
