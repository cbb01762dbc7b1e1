"""Write the ``translate`` template's dataset: ``data/train.jsonl`` and the held-out
``data/test.jsonl``.

Deterministic (fixed seed): running it again rewrites the same files. Each row is a chat
conversation in OpenAI ``messages`` form: the system prompt, a customer's support message in
Spanish, French, German, Portuguese or Italian, and the assistant's answer as one JSON object
with the English ``translation`` and the ``detectedLanguage``. The messages were written for
this project as parallel sentences (each template in all five languages and English), filled
with names, products, order numbers, cities, colours and amounts, with or without a greeting
and a sign-off.

    python -m arkor_ops.templates.translate.make_dataset [--train 360] [--test 40]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

SYSTEM = (
    "Translate this customer message to English. Reply with JSON: translation, detectedLanguage."
)

LANGUAGES = {"es": "Spanish", "fr": "French", "de": "German", "pt": "Portuguese", "it": "Italian"}

# Each template: the English text, then the same message in each language. Slots in {braces}.
TEMPLATES: list[dict[str, str]] = [
    {
        "en": "My {product} stopped working after {days} days. Can you help me?",
        "es": "Mi {product} dejó de funcionar después de {days} días. ¿Pueden ayudarme?",
        "fr": "Mon {product} ne fonctionne plus après {days} jours. Pouvez-vous m'aider ?",
        "de": "Mein {product} funktioniert nach {days} Tagen nicht mehr. Können Sie mir helfen?",
        "pt": "O meu {product} deixou de funcionar depois de {days} dias. Podem ajudar-me?",
        "it": "Il mio {product} ha smesso di funzionare dopo {days} giorni. Potete aiutarmi?",
    },
    {
        "en": "I ordered a {product} {days} days ago and it has not arrived yet. "
        "My order number is {order}.",
        "es": "Pedí un {product} hace {days} días y todavía no ha llegado. "
        "Mi número de pedido es {order}.",
        "fr": "J'ai commandé un {product} il y a {days} jours et il n'est toujours pas arrivé. "
        "Mon numéro de commande est {order}.",
        "de": "Ich habe vor {days} Tagen ein {product} bestellt und es ist noch nicht "
        "angekommen. Meine Bestellnummer ist {order}.",
        "pt": "Encomendei um {product} há {days} dias e ainda não chegou. "
        "O meu número de encomenda é {order}.",
        "it": "Ho ordinato un {product} {days} giorni fa e non è ancora arrivato. "
        "Il mio numero d'ordine è {order}.",
    },
    {
        "en": "I was charged {amount} euros twice for order {order}. Please refund one payment.",
        "es": "Me cobraron {amount} euros dos veces por el pedido {order}. "
        "Por favor, devuelvan uno de los pagos.",
        "fr": "On m'a débité {amount} euros deux fois pour la commande {order}. "
        "Merci de rembourser un des paiements.",
        "de": "Mir wurden für die Bestellung {order} zweimal {amount} Euro berechnet. "
        "Bitte erstatten Sie eine Zahlung.",
        "pt": "Cobraram-me {amount} euros duas vezes pela encomenda {order}. "
        "Por favor, reembolsem um dos pagamentos.",
        "it": "Mi hanno addebitato {amount} euro due volte per l'ordine {order}. "
        "Per favore, rimborsate uno dei pagamenti.",
    },
    {
        "en": "I cannot log in to my account. The password reset email never arrives.",
        "es": "No puedo iniciar sesión en mi cuenta. "
        "El correo para restablecer la contraseña nunca llega.",
        "fr": "Je n'arrive pas à me connecter à mon compte. "
        "L'e-mail de réinitialisation du mot de passe n'arrive jamais.",
        "de": "Ich kann mich nicht in mein Konto einloggen. "
        "Die E-Mail zum Zurücksetzen des Passworts kommt nie an.",
        "pt": "Não consigo entrar na minha conta. O e-mail para redefinir a palavra-passe "
        "nunca chega.",
        "it": "Non riesco ad accedere al mio account. "
        "L'email per reimpostare la password non arriva mai.",
    },
    {
        "en": "The {product} arrived broken. I would like a replacement, not a refund.",
        "es": "El {product} llegó roto. Quisiera un reemplazo, no un reembolso.",
        "fr": "Le {product} est arrivé cassé. Je voudrais un remplacement, pas un remboursement.",
        "de": "Das {product} kam kaputt an. Ich möchte einen Ersatz, keine Rückerstattung.",
        "pt": "O {product} chegou partido. Gostaria de uma substituição, não de um reembolso.",
        "it": "Il {product} è arrivato rotto. Vorrei una sostituzione, non un rimborso.",
    },
    {
        "en": "Can I change the delivery address of order {order} to {city}?",
        "es": "¿Puedo cambiar la dirección de entrega del pedido {order} a {city}?",
        "fr": "Puis-je changer l'adresse de livraison de la commande {order} pour {city} ?",
        "de": "Kann ich die Lieferadresse der Bestellung {order} auf {city} ändern?",
        "pt": "Posso alterar o endereço de entrega da encomenda {order} para {city}?",
        "it": "Posso cambiare l'indirizzo di consegna dell'ordine {order} in {city}?",
    },
    {
        "en": "My {product} has not connected to the Wi-Fi since the last update.",
        "es": "Mi {product} no se conecta al wifi desde la última actualización.",
        "fr": "Mon {product} ne se connecte plus au Wi-Fi depuis la dernière mise à jour.",
        "de": "Mein {product} verbindet sich seit dem letzten Update nicht mehr mit dem WLAN.",
        "pt": "O meu {product} não se liga ao Wi-Fi desde a última atualização.",
        "it": "Il mio {product} non si connette al Wi-Fi dall'ultimo aggiornamento.",
    },
    {
        "en": "I want to cancel my subscription. Please confirm by email.",
        "es": "Quiero cancelar mi suscripción. Por favor, confírmenlo por correo electrónico.",
        "fr": "Je veux résilier mon abonnement. Merci de me le confirmer par e-mail.",
        "de": "Ich möchte mein Abonnement kündigen. Bitte bestätigen Sie das per E-Mail.",
        "pt": "Quero cancelar a minha assinatura. Por favor, confirmem por e-mail.",
        "it": "Voglio disdire il mio abbonamento. Per favore, confermatelo via email.",
    },
    {
        "en": "The battery of my {product} only lasts {hours} hours. Is that normal?",
        "es": "La batería de mi {product} solo dura {hours} horas. ¿Es normal?",
        "fr": "La batterie de mon {product} ne dure que {hours} heures. Est-ce normal ?",
        "de": "Der Akku meines {product} hält nur {hours} Stunden. Ist das normal?",
        "pt": "A bateria do meu {product} só dura {hours} horas. É normal?",
        "it": "La batteria del mio {product} dura solo {hours} ore. È normale?",
    },
    {
        "en": "Where can I download the invoice for order {order}?",
        "es": "¿Dónde puedo descargar la factura del pedido {order}?",
        "fr": "Où puis-je télécharger la facture de la commande {order} ?",
        "de": "Wo kann ich die Rechnung für die Bestellung {order} herunterladen?",
        "pt": "Onde posso descarregar a fatura da encomenda {order}?",
        "it": "Dove posso scaricare la fattura dell'ordine {order}?",
    },
    {
        "en": "The app shows an error when I try to pay. I tried {tries} times.",
        "es": "La aplicación muestra un error cuando intento pagar. Lo intenté {tries} veces.",
        "fr": "L'application affiche une erreur quand j'essaie de payer. J'ai essayé {tries} fois.",
        "de": "Die App zeigt einen Fehler, wenn ich bezahlen will. "
        "Ich habe es {tries} Mal versucht.",
        "pt": "A aplicação mostra um erro quando tento pagar. Tentei {tries} vezes.",
        "it": "L'app mostra un errore quando provo a pagare. Ho provato {tries} volte.",
    },
    {
        "en": "I would like to return the {product}. How much time do I have?",
        "es": "Quisiera devolver el {product}. ¿Cuánto tiempo tengo?",
        "fr": "Je voudrais retourner le {product}. Combien de temps ai-je ?",
        "de": "Ich möchte das {product} zurückgeben. Wie viel Zeit habe ich?",
        "pt": "Gostaria de devolver o {product}. Quanto tempo tenho?",
        "it": "Vorrei restituire il {product}. Quanto tempo ho?",
    },
    {
        "en": "The courier left the package at the wrong address. What should I do?",
        "es": "El repartidor dejó el paquete en la dirección equivocada. ¿Qué debo hacer?",
        "fr": "Le livreur a déposé le colis à la mauvaise adresse. Que dois-je faire ?",
        "de": "Der Kurier hat das Paket an der falschen Adresse abgegeben. Was soll ich tun?",
        "pt": "O estafeta deixou a encomenda na morada errada. O que devo fazer?",
        "it": "Il corriere ha lasciato il pacco all'indirizzo sbagliato. Cosa devo fare?",
    },
    {
        "en": "Is there a discount if I buy {qty} units of the {product}?",
        "es": "¿Hay algún descuento si compro {qty} unidades del {product}?",
        "fr": "Y a-t-il une remise si j'achète {qty} unités du {product} ?",
        "de": "Gibt es einen Rabatt, wenn ich {qty} Stück vom {product} kaufe?",
        "pt": "Há algum desconto se eu comprar {qty} unidades do {product}?",
        "it": "C'è uno sconto se compro {qty} unità del {product}?",
    },
    {
        "en": "Please call me back tomorrow at {hour}:00. My name is {name}.",
        "es": "Por favor, llámenme mañana a las {hour}:00. Me llamo {name}.",
        "fr": "Merci de me rappeler demain à {hour}h00. Je m'appelle {name}.",
        "de": "Bitte rufen Sie mich morgen um {hour}:00 Uhr zurück. Mein Name ist {name}.",
        "pt": "Por favor, liguem-me amanhã às {hour}:00. O meu nome é {name}.",
        "it": "Per favore, richiamatemi domani alle {hour}:00. Mi chiamo {name}.",
    },
    {
        "en": "The screen of my {product} flickers when the brightness is low.",
        "es": "La pantalla de mi {product} parpadea cuando el brillo está bajo.",
        "fr": "L'écran de mon {product} clignote quand la luminosité est faible.",
        "de": "Der Bildschirm meines {product} flackert, wenn die Helligkeit niedrig ist.",
        "pt": "O ecrã do meu {product} pisca quando o brilho está baixo.",
        "it": "Lo schermo del mio {product} sfarfalla quando la luminosità è bassa.",
    },
    {
        "en": "I received the wrong colour. I ordered {colour} and got {colour2}.",
        "es": "Recibí el color equivocado. Pedí {colour} y me llegó {colour2}.",
        "fr": "J'ai reçu la mauvaise couleur. J'ai commandé du {colour} et j'ai reçu du {colour2}.",
        "de": "Ich habe die falsche Farbe bekommen. Ich habe {colour} bestellt und "
        "{colour2} erhalten.",
        "pt": "Recebi a cor errada. Encomendei {colour} e recebi {colour2}.",
        "it": "Ho ricevuto il colore sbagliato. Ho ordinato il {colour} e mi è arrivato "
        "il {colour2}.",
    },
    {
        "en": "Thank you for the quick help with my {product}!",
        "es": "¡Gracias por la ayuda rápida con mi {product}!",
        "fr": "Merci pour l'aide rapide avec mon {product} !",
        "de": "Danke für die schnelle Hilfe mit meinem {product}!",
        "pt": "Obrigado pela ajuda rápida com o meu {product}!",
        "it": "Grazie per l'aiuto veloce con il mio {product}!",
    },
    {
        "en": "My {product} makes a strange noise when it charges.",
        "es": "Mi {product} hace un ruido extraño cuando se carga.",
        "fr": "Mon {product} fait un bruit étrange quand il charge.",
        "de": "Mein {product} macht beim Laden ein seltsames Geräusch.",
        "pt": "O meu {product} faz um barulho estranho quando está a carregar.",
        "it": "Il mio {product} fa uno strano rumore quando si carica.",
    },
    {
        "en": "The {product} I received is used: the box was already open.",
        "es": "El {product} que recibí está usado: la caja ya estaba abierta.",
        "fr": "Le {product} que j'ai reçu est usagé : la boîte était déjà ouverte.",
        "de": "Das {product}, das ich bekommen habe, ist gebraucht: "
        "Die Verpackung war schon offen.",
        "pt": "O {product} que recebi está usado: a caixa já estava aberta.",
        "it": "Il {product} che ho ricevuto è usato: la scatola era già aperta.",
    },
]

GREETINGS: list[dict[str, str]] = [
    {"en": "Hello.", "es": "Hola.", "fr": "Bonjour.", "de": "Hallo.", "pt": "Olá.", "it": "Ciao."},
    {
        "en": "Good morning.",
        "es": "Buenos días.",
        "fr": "Bonjour.",
        "de": "Guten Morgen.",
        "pt": "Bom dia.",
        "it": "Buongiorno.",
    },
]
SIGN_OFFS: list[dict[str, str]] = [
    {
        "en": "Thanks, {name}",
        "es": "Gracias, {name}",
        "fr": "Merci, {name}",
        "de": "Danke, {name}",
        "pt": "Obrigado, {name}",
        "it": "Grazie, {name}",
    },
    {
        "en": "Best regards, {name}",
        "es": "Saludos, {name}",
        "fr": "Cordialement, {name}",
        "de": "Viele Grüße, {name}",
        "pt": "Cumprimentos, {name}",
        "it": "Cordiali saluti, {name}",
    },
]
COLOURS: list[dict[str, str]] = [
    {"en": "black", "es": "negro", "fr": "noir", "de": "Schwarz", "pt": "preto", "it": "nero"},
    {"en": "white", "es": "blanco", "fr": "blanc", "de": "Weiß", "pt": "branco", "it": "bianco"},
    {"en": "blue", "es": "azul", "fr": "bleu", "de": "Blau", "pt": "azul", "it": "blu"},
    {"en": "red", "es": "rojo", "fr": "rouge", "de": "Rot", "pt": "vermelho", "it": "rosso"},
    {"en": "green", "es": "verde", "fr": "vert", "de": "Grün", "pt": "verde", "it": "verde"},
    {"en": "grey", "es": "gris", "fr": "gris", "de": "Grau", "pt": "cinzento", "it": "grigio"},
]
NAMES = [
    "Lucía", "Mateo", "Camille", "Julien", "Lena", "Jonas", "Beatriz", "Tiago", "Giulia",
    "Marco", "Sofia", "Noah", "Inès", "Paul", "Clara", "Emma", "Diego", "Anouk",
]  # fmt: skip
PRODUCTS = [
    "Lumen Hub", "Lumen Cam 2", "Lumen Buds", "Lumen Watch S", "Lumen Router X",
    "Lumen Lamp", "Lumen Speaker Mini", "Lumen Tab 10",
]  # fmt: skip
CITIES = ["Madrid", "Lyon", "Hamburg", "Porto", "Bologna", "Valencia", "Bordeaux", "Leipzig"]


def _slots(rng: random.Random, lang: str) -> dict[str, str]:
    colour, colour2 = rng.sample(COLOURS, 2)
    return {
        "name": rng.choice(NAMES),
        "product": rng.choice(PRODUCTS),
        "order": str(rng.randint(10000, 99999)),
        "days": str(rng.randint(3, 21)),
        "amount": str(rng.choice([19, 29, 49, 79, 99, 149, 249])),
        "city": rng.choice(CITIES),
        "hours": str(rng.randint(2, 6)),
        "tries": str(rng.randint(2, 5)),
        "qty": str(rng.randint(3, 50)),
        "hour": str(rng.randint(9, 17)),
        "colour": colour[lang],
        "colour2": colour2[lang],
    }


def make_row(rng: random.Random, template: dict[str, str], lang: str) -> dict[str, object]:
    """One conversation: ``template`` in ``lang``, its English translation the answer."""
    source = _slots(rng, lang)
    english = dict(source)
    if "colour" in template["en"]:  # the colours in English, as the message has them
        for key in ("colour", "colour2"):
            english[key] = next(c["en"] for c in COLOURS if c[lang] == source[key])
    greeting = rng.choice([None, *GREETINGS])
    sign_off = rng.choice([None, *SIGN_OFFS]) if "{name}" not in template["en"] else None
    parts: dict[str, list[str]] = {lang: [], "en": []}
    for key, slots in ((lang, source), ("en", english)):
        if greeting is not None:
            parts[key].append(greeting[key])
        parts[key].append(template[key].format(**slots))
        if sign_off is not None:
            parts[key].append(sign_off[key].format(**slots))
    answer = {"translation": " ".join(parts["en"]), "detectedLanguage": LANGUAGES[lang]}
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": " ".join(parts[lang])},
            {"role": "assistant", "content": json.dumps(answer, ensure_ascii=False)},
        ]
    }


def build(
    train: int, test: int, seed: int = 11
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Train and test rows, templates and languages in turn; no message is in both."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible dataset, not secrets
    langs = list(LANGUAGES)
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    for attempt in range(100 * (train + test)):
        if len(rows) == train + test:
            break
        template = TEMPLATES[attempt % len(TEMPLATES)]
        row = make_row(rng, template, langs[(attempt // len(TEMPLATES)) % len(langs)])
        text = row["messages"][1]["content"]  # type: ignore[index]
        if text in seen:
            continue
        seen.add(text)
        rows.append(row)
    rng.shuffle(rows)
    return rows[:train], rows[train:]


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    """Write one JSON object per line."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")


def main() -> None:
    """Write data/train.jsonl and data/test.jsonl next to this file."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--train", type=int, default=360)
    parser.add_argument("--test", type=int, default=40)
    args = parser.parse_args()
    train, test = build(args.train, args.test)
    (HERE / "data").mkdir(exist_ok=True)
    write_jsonl(HERE / "data" / "train.jsonl", train)
    write_jsonl(HERE / "data" / "test.jsonl", test)
    print(f"wrote {len(train)} train and {len(test)} test rows to {HERE / 'data'}")


if __name__ == "__main__":
    main()
