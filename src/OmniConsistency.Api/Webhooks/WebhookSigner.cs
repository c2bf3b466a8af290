using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Options;
using OmniConsistency.Api.Options;

namespace OmniConsistency.Api.Webhooks;

/// <summary>
/// Standard Webhooks signatures: "v1," + base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")), where
/// the key is the base64 part of the "whsec_..." secret. Without a configured secret one is generated once and kept
/// in the data directory, so signatures stay verifiable across restarts.
/// </summary>
public sealed class WebhookSigner
{
    public const string SecretPrefix = "whsec_";
    private readonly byte[] _key;

    public WebhookSigner(IOptions<WebhookOptions> options, IOptions<StorageOptions> storage, ILogger<WebhookSigner> logger)
    {
        var secret = options.Value.Secret;
        if (string.IsNullOrWhiteSpace(secret))
        {
            var path = Path.Combine(storage.Value.DataPath, "webhook-secret.txt");
            if (File.Exists(path)) secret = File.ReadAllText(path).Trim();
            else
            {
                secret = SecretPrefix + Convert.ToBase64String(RandomNumberGenerator.GetBytes(32));
                Directory.CreateDirectory(storage.Value.DataPath);
                File.WriteAllText(path, secret + "\n");
                logger.LogWarning("No webhook secret configured (Omni:Webhooks:Secret): generated one in {Path}", path);
            }
        }
        _key = DecodeSecret(secret);
    }

    /// <summary>The HMAC key of a "whsec_..." secret; throws <see cref="FormatException"/> when it is not one.</summary>
    public static byte[] DecodeSecret(string secret)
    {
        var body = secret.StartsWith(SecretPrefix, StringComparison.Ordinal) ? secret[SecretPrefix.Length..] : secret;
        var key = Convert.FromBase64String(body);
        if (key.Length < 16) throw new FormatException("A webhook secret must decode to at least 16 bytes.");
        return key;
    }

    public string Sign(string messageId, long timestamp, string body) => Sign(_key, messageId, timestamp, body);

    public static string Sign(byte[] key, string messageId, long timestamp, string body) =>
        "v1," + Convert.ToBase64String(HMACSHA256.HashData(key, Encoding.UTF8.GetBytes($"{messageId}.{timestamp}.{body}")));
}
