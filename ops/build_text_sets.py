# ruff: noqa: RUF001, E501  (a file of hand-written texts in many scripts: long lines and look-alike letters are the point)
"""Write ``worker/models/text_sets.json``: the built-in evaluation, calibration and
retrieval texts the int8 accuracy guard and ``ops/bench/quantization.py`` use.

Every text is written for this project (hand-written pieces, combined with a fixed seed);
nothing is copied from a data set. Run it again only to change the sets::

    python ops/build_text_sets.py

Per category the generator makes a pool of distinct texts and deals it into two disjoint
sets: ``evaluation`` (what the guard and the benchmark check) and ``calibration`` (what the
quantizer's activation ranges and outlier channels are chosen from).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

EVALUATION_PER_CATEGORY = 52
CALIBRATION_PER_CATEGORY = 26
SEED = 11
OUT = Path(__file__).resolve().parents[1] / "worker" / "models" / "text_sets.json"

Rng = random.Random

SHORT = [
    "OK", "Thanks!", "No.", "yes", "Yes please", "sure", "nope", "Got it", "thank you",
    "reset password", "pricing", "cancel order", "refund status", "where is my parcel",
    "login", "help", "contact support", "opening hours", "track order", "delete account",
    "invoice", "shipping cost", "not working", "how much", "free trial", "change email",
    "wifi password", "late delivery", "size guide", "return policy", "great, thanks",
    "Hello", "hi there", "bye", "Good morning", "see you", "sounds good", "maybe later",
    "I agree", "never mind", "no thanks", "why?", "when?", "who knows", "Understood.",
    "Perfect!", "Done.", "Sorry", "weather tomorrow", "nearest pharmacy", "cheap flights",
    "python tutorial", "error 404", "battery life", "vegan pizza", "train to Leeds",
    "Confirmed", "wrong item", "update app", "dark mode", "unsubscribe", "speak to human",
    "account locked", "two factor", "gift card", "order history", "payment failed",
    "Merci", "Danke", "gracias", "ok cool", "fine", "agreed", "Approved", "rejected",
]
PUNCT = [
    "?", "!", ".", "...", "!!!", "???", "?!", "-", "--", "—", "#", "@", "&", "*", "/",
    "\\", "|", "~", "^", "%", "$", "€", "£", "¥", "+", "=", "<>", "()", "[]", "{}", ";",
    ":", "::", "->", "=>", "&&", "||", "//", "/* */", "#!", ">>>", "<<<", "...?", "¿?", "¡!",
    "“”", "«»", "„“", "…", "•", "·", "§", "¶", "©", "®", "™", "°", "±", "×", "÷", "a",
    "x", "I", "the", "of", "42", "0", "7", "π", "∑", "√", "∞", "Ω", "µ", "é", "ß", "ø",
    "ñ", "ok?", "k", "y", "n", "hmm", "uh", "eh", "_", "__init__", "\"\"", "''", "``",
    ",", ",,", ". . .", "- - -", "***", "===", "+++", "###", "@@", "%%", "$$", "!?",
]
CODE = [
    "def add(a, b):\n    return a + b",
    "for i in range(10):\n    print(i * i)",
    "import numpy as np\nx = np.zeros((3, 4), dtype=np.float32)",
    "class Point:\n    def __init__(self, x, y):\n        self.x, self.y = x, y",
    "with open('data.csv') as f:\n    rows = [line.split(',') for line in f]",
    "async def fetch(session, url):\n    async with session.get(url) as r:\n        return await r.json()",
    "try:\n    value = int(text)\nexcept ValueError:\n    value = 0",
    "squares = {n: n ** 2 for n in range(1, 11) if n % 2}",
    "@dataclass(frozen=True)\nclass Order:\n    id: int\n    total: float",
    "SELECT id, name FROM users WHERE created_at > '2024-01-01' ORDER BY name;",
    "SELECT country, COUNT(*) AS n FROM orders GROUP BY country HAVING COUNT(*) > 10;",
    "UPDATE accounts SET balance = balance - 50 WHERE id = 17;",
    "CREATE TABLE items (id SERIAL PRIMARY KEY, sku TEXT NOT NULL, price NUMERIC(10,2));",
    "DELETE FROM sessions WHERE expires_at < now();",
    "SELECT o.id, c.email FROM orders o JOIN customers c ON c.id = o.customer_id LIMIT 20;",
    "INSERT INTO logs (level, message) VALUES ('warn', 'disk almost full');",
    "ls -la /var/log | grep nginx",
    "find . -name '*.py' -mtime -2 -exec wc -l {} +",
    "tar -czf backup.tar.gz ~/projects && scp backup.tar.gz host:/backups/",
    "export PATH=\"$HOME/.local/bin:$PATH\"",
    "docker run --rm -p 8080:80 -v $(pwd):/usr/share/nginx/html nginx:1.25",
    "kubectl get pods -n prod -o wide | awk '{print $1, $3}'",
    "git rebase -i HEAD~3 && git push --force-with-lease",
    "curl -sS -X POST -H 'Content-Type: application/json' -d '{\"q\": 1}' localhost:9000/api",
    "const sum = (xs) => xs.reduce((a, b) => a + b, 0);",
    "document.querySelector('#save').addEventListener('click', () => save(form));",
    "fetch('/api/items').then(r => r.json()).then(items => render(items));",
    "let count = 0;\nsetInterval(() => console.log(++count), 1000);",
    "export default function Button({ label }) { return <button>{label}</button>; }",
    "const { data, error } = await supabase.from('notes').select('*');",
    "if (user && user.roles.includes('admin')) { showPanel(); }",
    "#include <stdio.h>\nint main(void) { printf(\"hello\\n\"); return 0; }",
    "for (int i = 0; i < n; i++) { sum += a[i] * b[i]; }",
    "struct node { int value; struct node *next; };",
    "char *buf = malloc(len + 1);\nif (!buf) return -ENOMEM;",
    "static inline uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }",
    "while ((c = getchar()) != EOF) putchar(toupper(c));",
    "server:\n  port: 8080\n  host: 0.0.0.0\nlogging:\n  level: info",
    "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n    - port: 80",
    "steps:\n  - uses: actions/checkout@v4\n  - run: pytest -q",
    "{\"id\": 42, \"name\": \"Ada\", \"tags\": [\"admin\", \"ops\"], \"active\": true}",
    "{\"error\": {\"code\": 429, \"message\": \"rate limit exceeded\", \"retry_after\": 30}}",
    "[{\"sku\": \"A-1\", \"qty\": 2}, {\"sku\": \"B-7\", \"qty\": 1}]",
    "fn main() { let v: Vec<i32> = (1..=5).collect(); println!(\"{:?}\", v); }",
    "func handler(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, \"ok\") }",
    "public static void main(String[] args) { System.out.println(\"Hi\"); }",
    "SELECT * FROM t;",
    "x = [i for i in data if i]",
    "print('done')",
    "npm install --save-dev eslint prettier",
    "pip install -r requirements.txt",
    "rm -rf build/ dist/ *.egg-info",
    "return nil, fmt.Errorf(\"parse %q: %w\", s, err)",
    "<div class=\"card\"><h2>{{ title }}</h2><p>{{ body }}</p></div>",
    "body { margin: 0; font-family: system-ui, sans-serif; }",
    "lambda x: x.strip().lower()",
    "df.groupby('city')['sales'].sum().sort_values(ascending=False).head(10)",
    "assert response.status_code == 200, response.text",
    "SELECT DISTINCT ON (user_id) * FROM events ORDER BY user_id, ts DESC;",
    "sudo systemctl restart postgresql && journalctl -u postgresql -n 50",
    "const re = /^[\\w.+-]+@[\\w-]+\\.[\\w.]+$/;",
    "memcpy(dst, src, n * sizeof(*src));",
    "retries: 3\ntimeout_s: 30\nendpoints:\n  - https://a.example\n  - https://b.example",
    "{\"version\": 2, \"builds\": [{\"src\": \"index.js\", \"use\": \"@vercel/node\"}]}",
    "chmod +x deploy.sh && ./deploy.sh --env staging",
    "SELECT AVG(price) FROM products WHERE category = 'books';",
    "with torch.no_grad():\n    logits = model(input_ids).logits",
    "if __name__ == '__main__':\n    main()",
    "echo $((3 + 4)) > out.txt",
    "while True:\n    job = queue.get()\n    handle(job)",
    "typedef struct { float x, y, z; } vec3;",
    "const [state, setState] = useState(null);",
]
LOG_LEVELS = ["INFO", "WARN", "ERROR", "DEBUG", "CRITICAL"]
LOG_SERVICES = ["api-gateway", "billing", "auth", "worker-3", "scheduler", "nginx", "kafka",
                "redis", "payments", "search"]
LOG_MESSAGES = [
    "request completed status=200 duration_ms={n}",
    "connection refused to 10.0.{a}.{b}:5432, retrying in {n} ms",
    "user_id={n} login failed: invalid password",
    "disk usage at {a}% on /dev/sda1",
    "GC pause {n}ms, heap {a}MB/{b}MB",
    "timeout after {n}ms waiting for upstream",
    "consumer group rebalanced, partitions=[{a},{b}]",
    "cache miss key=session:{n}",
    "job {n} finished in {a}.{b}s",
    "TLS handshake failed: certificate has expired",
    "queue depth {n} exceeds threshold {a}",
    "OOMKilled: container exceeded memory limit {a}Mi",
]
TRACES = [
    "Traceback (most recent call last):\n  File \"app.py\", line {a}, in <module>\n    main()\n"
    "  File \"app.py\", line {b}, in main\n    total = price / count\nZeroDivisionError: division by zero",
    "Traceback (most recent call last):\n  File \"/srv/worker.py\", line {a}, in run\n"
    "    data = json.loads(raw)\njson.decoder.JSONDecodeError: Expecting value: line 1 column {b}",
    "Exception in thread \"main\" java.lang.NullPointerException\n\tat com.shop.Cart.total(Cart.java:{a})"
    "\n\tat com.shop.Main.main(Main.java:{b})",
    "panic: runtime error: index out of range [{a}] with length {b}\n\ngoroutine 1 [running]:\nmain.main()",
    "TypeError: Cannot read properties of undefined (reading 'map')\n    at render (list.js:{a}:{b})",
    "KeyError: 'user_{a}'",
    "Segmentation fault (core dumped) at 0x{a}{b}f3",
    "thread 'main' panicked at 'called `Option::unwrap()` on a `None` value', src/main.rs:{a}:{b}",
]
DOMAINS = ["example.com", "shop.example.org", "mail.test", "api.example.net", "docs.example.io",
           "exemple.fr", "beispiel.de", "ejemplo.es"]
NAMES = ["anna", "j.smith", "li.wei", "support", "noreply", "m.garcia", "olga_k", "sam+news",
         "admin", "r.patel"]
STREETS = ["12 Baker Street, London NW1 6XE", "221 Elm Ave, Springfield, IL 62704",
           "Hauptstraße 5, 10115 Berlin", "7 rue de la Paix, 75002 Paris",
           "Calle Mayor 23, 28013 Madrid", "1-2-3 Shibuya, Tokyo 150-0002",
           "PO Box 4411, Wellington 6140", "Flat 3, 48 Queen's Road, Bristol BS8 1QU",
           "500 Market St Suite 200, San Francisco, CA 94105", "ul. Długa 8, 00-238 Warszawa"]
PATHS = ["", "/", "/login", "/search?q=red+shoes&page=2", "/docs/v2/getting-started#install",
         "/api/v1/orders/{n}", "/blog/2024/05/how-we-scaled", "/cart?item={n}&qty=2",
         "/files/report_{n}.pdf", "/u/{a}/settings"]
PRODUCT_BRANDS = ["Acme", "Nordik", "Zentro", "Lumio", "Korvel", "Brixby", "Tamsin", "Oktavo"]
PRODUCT_THINGS = [
    "Wireless Earbuds with Noise Cancelling, 30h Battery, Bluetooth 5.3",
    "Stainless Steel Water Bottle 750 ml, Vacuum Insulated, Leak-Proof Lid",
    "Men's Running Shoes Lightweight Breathable Mesh, Size 10 UK",
    "4K Ultra HD Smart TV 55\" HDR10 with Voice Remote",
    "Organic Green Tea 100 Bags, Sencha, Fair Trade",
    "USB-C Charger 65W GaN, 3 Ports, Foldable Plug",
    "Ergonomic Office Chair, Lumbar Support, Adjustable Armrests, Black",
    "Cast Iron Skillet 26 cm Pre-Seasoned",
    "Kids' Waterproof Rain Jacket with Hood, 6-7 Years, Yellow",
    "Mechanical Keyboard TKL, Brown Switches, RGB Backlight",
    "Yoga Mat 6 mm Non-Slip, with Carry Strap",
    "LED Desk Lamp, Dimmable, 5 Colour Modes, USB Charging Port",
    "Cotton Bed Sheet Set King Size 400 Thread Count, White",
    "Portable SSD 1TB USB 3.2, up to 1050 MB/s",
    "Dog Food Adult Chicken & Rice 12 kg",
    "Espresso Machine 15 Bar with Milk Frother",
    "Hardcover Notebook A5 Dotted, 160 Pages",
    "Women's Merino Wool Socks, 3 Pairs, Size 37-40",
    "Replacement Filter for Air Purifier, HEPA H13, 2-Pack",
    "Electric Toothbrush with 2 Heads and Travel Case",
]
MULTI = {
    "fr": ["Où se trouve la gare la plus proche ?", "Merci beaucoup pour votre aide rapide.",
           "La livraison est arrivée avec deux jours de retard.", "Je voudrais annuler ma commande.",
           "Le rapport trimestriel sera publié lundi prochain.", "Quel temps fera-t-il demain à Lyon ?"],
    "de": ["Wo ist der nächste Bahnhof?", "Vielen Dank für die schnelle Antwort.",
           "Die Rechnung wurde zweimal abgebucht.", "Ich möchte mein Passwort zurücksetzen.",
           "Das Konzert wurde wegen des Regens verschoben.", "Wie lange dauert der Versand nach Wien?"],
    "es": ["¿Dónde está la estación más cercana?", "Muchas gracias por tu ayuda.",
           "El paquete llegó roto y quiero un reembolso.", "¿Cuál es el horario de atención?",
           "Mañana habrá tormentas en el norte del país.", "Necesito cambiar la dirección de envío."],
    "pt": ["Onde fica a farmácia mais próxima?", "Obrigado pela entrega rápida.",
           "O aplicativo fecha sozinho quando abro a câmera.", "Quero cancelar a minha assinatura."],
    "it": ["Dov'è la fermata dell'autobus?", "Grazie mille, tutto perfetto.",
           "Il volo è stato cancellato senza preavviso.", "Vorrei prenotare un tavolo per due."],
    "pl": ["Gdzie jest najbliższy dworzec?", "Dziękuję za szybką odpowiedź.",
           "Paczka nie dotarła na czas."],
    "tr": ["En yakın eczane nerede?", "Yardımınız için çok teşekkürler.",
           "Siparişimi iptal etmek istiyorum."],
    "vi": ["Nhà ga gần nhất ở đâu?", "Cảm ơn bạn rất nhiều.", "Tôi muốn đổi mật khẩu."],
    "ru": ["Где находится ближайший вокзал?", "Спасибо за быструю доставку.",
           "Приложение не запускается после обновления.", "Я хочу вернуть этот товар.",
           "Завтра ожидается сильный снег в Москве."],
    "uk": ["Де найближча аптека?", "Дякую за допомогу!", "Замовлення прийшло пошкодженим."],
    "el": ["Πού είναι ο πλησιέστερος σταθμός;", "Ευχαριστώ πολύ για τη βοήθεια.",
           "Η παραγγελία μου καθυστερεί.", "Θέλω να αλλάξω τον κωδικό μου."],
    "ar": ["أين أقرب محطة قطار؟", "شكرا جزيلا على المساعدة.", "أريد إلغاء طلبي من فضلك.",
           "وصل الطرد متأخرا بثلاثة أيام.", "ما هي ساعات العمل يوم الجمعة؟"],
    "he": ["איפה התחנה הקרובה?", "תודה רבה על העזרה.", "ההזמנה שלי לא הגיעה."],
    "hi": ["सबसे नज़दीकी स्टेशन कहाँ है?", "आपकी मदद के लिए धन्यवाद।", "मेरा ऑर्डर अभी तक नहीं आया।",
           "मैं अपना पासवर्ड बदलना चाहता हूँ।"],
    "zh": ["最近的火车站在哪里？", "非常感谢你的帮助。", "我的订单还没有到。", "请问明天北京的天气怎么样？",
           "这个应用更新以后就打不开了。", "退款需要多长时间？"],
    "ja": ["一番近い駅はどこですか？", "ご協力ありがとうございます。", "注文した商品がまだ届きません。",
           "パスワードを変更したいです。", "明日の東京は雨の予報です。"],
    "ko": ["가장 가까운 역이 어디예요?", "도와주셔서 감사합니다.", "주문을 취소하고 싶어요.",
           "배송이 너무 늦어요."],
    "th": ["สถานีรถไฟที่ใกล้ที่สุดอยู่ที่ไหน", "ขอบคุณมากครับ", "ฉันต้องการยกเลิกคำสั่งซื้อ"],
}
EMOJI = ["😂", "🔥", "👍", "🙏", "❤️", "😭", "💯", "🎉", "🤔", "😅", "🚀", "👀", "😡", "🥲", "✨", "🍕"]
SLANG = ["lol", "lmao", "tbh", "ngl this slaps", "idk", "brb", "omg", "fr fr", "no cap",
         "it's giving main character", "rly?", "wyd", "bruh", "smh", "yeet", "lowkey tired",
         "highkey obsessed", "sus", "gg ez", "ikr", "ty", "np", "imo it's mid", "vibes",
         "that's bussin", "send it", "big mood", "ur the best", "cya", "ttyl"]
CAPS = [
    "URGENT: SERVER DOWN", "PLEASE CALL ME BACK ASAP", "FREE SHIPPING ON ALL ORDERS TODAY",
    "DO NOT REPLY TO THIS EMAIL", "WARNING: HIGH VOLTAGE", "I WANT MY MONEY BACK",
    "THIS IS THE WORST SERVICE EVER", "SALE ENDS AT MIDNIGHT", "ORDER CONFIRMED",
    "BREAKING NEWS: MARKETS RALLY", "WHERE IS MY PACKAGE", "CANCEL MY SUBSCRIPTION NOW",
    "HAPPY BIRTHDAY", "THANK YOU SO MUCH", "NO PARKING", "EMERGENCY EXIT ONLY",
    "ACCOUNT SUSPENDED", "CONGRATULATIONS YOU WON", "READ THE MANUAL", "STOP",
    "FINAL NOTICE: PAYMENT OVERDUE", "OPEN 24 HOURS", "KEEP OUT", "LIMITED EDITION",
]
WORDS = ["buy", "the", "no", "help", "ok", "error", "data", "yes", "very", "go", "la", "test",
         "hello", "spam", "please", "why", "ha", "money", "cat", "night"]
TOPIC_SENTENCES = [
    "The city council met on Tuesday evening to discuss the new cycling lanes along the river.",
    "Several residents argued that the lanes would make the narrow streets even more crowded.",
    "Others pointed out that the number of accidents involving cyclists had doubled in five years.",
    "Our team migrated the billing service from a single database to a set of smaller ones.",
    "The first attempt failed because two services still wrote to the same table at night.",
    "After adding a queue between them, write conflicts disappeared and latency fell by half.",
    "Sourdough bread needs a starter that is fed with flour and water every day for a week.",
    "A warm kitchen speeds up fermentation, while a cold one gives a more sour flavour.",
    "Bake the loaf in a covered pot for twenty minutes, then uncover it to brown the crust.",
    "The museum's new exhibition brings together maps drawn by sailors over three centuries.",
    "Many of them show coastlines that were wrong by hundreds of kilometres.",
    "Visitors can compare them with satellite images on touch screens next to each map.",
    "Heat pumps move heat instead of producing it, which is why they use so little electricity.",
    "In very cold weather their efficiency drops, and a backup heater may switch on.",
    "Good insulation matters more than the choice of pump for most older houses.",
    "The support ticket described a payment that was charged twice within one minute.",
    "Logs showed the mobile app retried the request after a timeout that was too short.",
    "The fix made the payment endpoint idempotent by storing a key sent with each request.",
    "Marathon training usually lasts sixteen to twenty weeks and builds distance slowly.",
    "Most plans include one long run a week, a few easy runs, and at least one rest day.",
    "Injuries often come from increasing the weekly distance by more than ten percent.",
    "The library will close for renovation from March until the end of the summer.",
    "During that time, books can be borrowed from a temporary branch in the town hall.",
    "Returned items may be dropped in the box by the main entrance at any hour.",
    "Volcanic soil is rich in minerals, which is why farms often surround active volcanoes.",
    "The risk of eruption is weighed against harvests that are larger than elsewhere.",
    "Scientists monitor small earthquakes and gas emissions to give early warnings.",
    "Our quarterly survey asked customers what they would change about the checkout page.",
    "Most answers mentioned hidden delivery fees and the lack of a guest checkout option.",
    "A redesigned page that showed all costs up front raised completed orders by eight percent.",
]


def _unique(make: Callable[[Rng], str], rng: Rng, count: int, base: list[str]) -> list[str]:
    pool = list(dict.fromkeys(base))
    rng.shuffle(pool)
    seen = set(pool)
    attempts = 0
    while len(pool) < count and attempts < 100_000:
        attempts += 1
        text = make(rng)
        if text not in seen:
            seen.add(text)
            pool.append(text)
    if len(pool) < count:
        raise RuntimeError(f"only {len(pool)} distinct texts, need {count}")
    return pool[:count]


def _n(rng: Rng) -> int:
    return rng.choice([rng.randint(0, 99), rng.randint(100, 9999), rng.randint(10_000, 999_999)])


def short(rng: Rng) -> str:
    return " ".join(rng.sample([w.lower().strip("!.") for w in SHORT], rng.randint(1, 3))[:3])


def punct(rng: Rng) -> str:
    return "".join(rng.sample(PUNCT, rng.randint(1, 2)))


def code(rng: Rng) -> str:
    return "\n".join(rng.sample(CODE, 2))


def log_line(rng: Rng) -> str:
    fields = {"n": _n(rng), "a": rng.randint(1, 99), "b": rng.randint(1, 999)}
    if rng.random() < 0.25:
        return rng.choice(TRACES).format(**fields)
    stamp = (f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:"
             f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}Z")
    return (f"{stamp} {rng.choice(LOG_LEVELS)} [{rng.choice(LOG_SERVICES)}] "
            f"{rng.choice(LOG_MESSAGES).format(**fields)}")


def contact(rng: Rng) -> str:
    kind = rng.randrange(5)
    domain = rng.choice(DOMAINS)
    if kind == 0:
        path = rng.choice(PATHS).format(n=_n(rng), a=rng.choice(NAMES))
        return f"{rng.choice(['https', 'http'])}://{rng.choice(['', 'www.'])}{domain}{path}"
    if kind == 1:
        return f"{rng.choice(NAMES)}@{domain}"
    if kind == 2:
        return rng.choice([f"+44 20 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}",
                           f"(555) {rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
                           f"+49 30 {rng.randint(100000, 999999)}",
                           f"+81-3-{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}",
                           f"0{rng.randint(600, 799)} {rng.randint(100, 999)} {rng.randint(100, 999)}"])
    if kind == 3:
        return rng.choice(STREETS)
    return (f"Contact: {rng.choice(NAMES)}@{domain}, tel. +1 {rng.randint(200, 999)} "
            f"{rng.randint(200, 999)} {rng.randint(1000, 9999)}")


def number(rng: Rng) -> str:
    kind = rng.randrange(8)
    if kind == 0:
        return f"${rng.randint(1, 9999)}.{rng.randint(0, 99):02d}"
    if kind == 1:
        return f"{rng.randint(1, 999)},{rng.randint(0, 99):02d} €"
    if kind == 2:
        return f"{rng.randint(1, 28)}/{rng.randint(1, 12)}/{rng.randint(1990, 2030)}"
    if kind == 3:
        return f"{rng.randint(1990, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if kind == 4:
        return str(_n(rng) * rng.choice([1, 1000, 1_000_000]))
    if kind == 5:
        return f"{rng.randint(0, 100)}.{rng.randint(0, 99)}%"
    if kind == 6:
        month = rng.choice(["January", "March", "June", "August", "October", "December"])
        return f"{month} {rng.randint(1, 28)}, {rng.randint(1990, 2030)}"
    return rng.choice([f"£{rng.randint(1, 500)}k", f"{rng.randint(1, 99)} x {rng.randint(1, 99)}",
                       f"¥{rng.randint(100, 99999):,}", f"{rng.random() * 1000:.3f}",
                       f"USD {rng.randint(1, 9):d}.{rng.randint(0, 9)}M",
                       f"{rng.randint(1, 12)}:{rng.randint(0, 59):02d} pm"])


def product(rng: Rng) -> str:
    return f"{rng.choice(PRODUCT_BRANDS)} {rng.choice(PRODUCT_THINGS)}"


def multilingual(rng: Rng) -> str:
    lang = rng.choice(sorted(MULTI))
    return " ".join(rng.sample(MULTI[lang], min(2, len(MULTI[lang]))))


def emoji(rng: Rng) -> str:
    parts = [rng.choice(SLANG), "".join(rng.choices(EMOJI, k=rng.randint(1, 3)))]
    rng.shuffle(parts)
    return " ".join(parts) if rng.random() < 0.8 else parts[0]


def caps(rng: Rng) -> str:
    return " ".join(rng.sample(CAPS, 2)) + rng.choice(["", "!", "!!!", "?"])


def repeated(rng: Rng) -> str:
    word = rng.choice(WORDS)
    sep = rng.choice([" ", " ", ", ", "! ", "-"])
    return sep.join([word] * rng.randint(2, 40))


def paragraph(rng: Rng) -> str:
    count = rng.randint(10, 15)
    return " ".join(rng.choice(TOPIC_SENTENCES) for _ in range(count))


def prose(rng: Rng) -> str:
    return rng.choice(TOPIC_SENTENCES)


CATEGORIES: dict[str, tuple[Callable[[Rng], str], list[str]]] = {
    "short": (short, SHORT),
    "punctuation": (punct, PUNCT),
    "code": (code, CODE),
    "logs": (log_line, []),
    "contact": (contact, STREETS),
    "numbers": (number, []),
    "products": (product, []),
    "multilingual": (multilingual, [t for texts in MULTI.values() for t in texts]),
    "emoji_slang": (emoji, SLANG),
    "all_caps": (caps, CAPS),
    "repeated": (repeated, []),
    "paragraphs": (paragraph, []),
}


def build() -> dict[str, object]:
    rng = Rng(SEED)
    evaluation: dict[str, list[str]] = {}
    calibration: dict[str, list[str]] = {}
    total = EVALUATION_PER_CATEGORY + CALIBRATION_PER_CATEGORY
    for name, (make, base) in CATEGORIES.items():
        pool = _unique(make, rng, total, base)
        # interleave so both sets get hand-written and combined texts
        evaluation[name] = [t for i, t in enumerate(pool) if i % 3 != 2]
        calibration[name] = [t for i, t in enumerate(pool) if i % 3 == 2]
        assert len(evaluation[name]) == EVALUATION_PER_CATEGORY
    retrieval = []
    for name, texts in evaluation.items():
        for passage in texts[:16]:
            words = passage.split()
            start = rng.randrange(max(1, len(words) - 3))
            query = " ".join(words[start : start + rng.randint(1, 4)]) or passage
            retrieval.append({"category": name, "query": query, "passage": passage})
    return {"seed": SEED, "evaluation": evaluation, "calibration": calibration,
            "retrieval": retrieval}


if __name__ == "__main__":
    OUT.write_text(json.dumps(build(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")
