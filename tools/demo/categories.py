"""The latent interest categories of the demo catalog.

Each category drives everything about its items — words, picture style and
sound — so that content genuinely predicts which users like an item. The
vocabularies use plain English that a sentence encoder such as MiniLM knows.
"""

from __future__ import annotations

from dataclasses import dataclass

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Vocabulary:
    product_adjectives: tuple[str, ...]
    product_nouns: tuple[str, ...]
    video_topics: tuple[str, ...]
    audio_moods: tuple[str, ...]
    audio_forms: tuple[str, ...]
    uses: tuple[str, ...]  # full sentences: what a product is good for
    features: tuple[str, ...]  # full sentences: a concrete product detail
    media_notes: tuple[str, ...]  # full sentences about what a video or track contains
    tags: tuple[str, ...]


@dataclass(frozen=True)
class VisualStyle:
    sky: RGB  # top of the background gradient
    ground: RGB  # bottom of the background gradient
    palette: tuple[RGB, ...]  # colours for the motif
    motif: str  # a drawing routine in ``tools.demo.images``
    texture: str  # an overlay routine in ``tools.demo.images``


@dataclass(frozen=True)
class Timbre:
    harmonics: tuple[float, ...]  # amplitude of partials 1, 2, 3, ...
    attack_s: float
    decay_s: float  # exponential decay time constant
    vibrato_hz: float = 0.0
    vibrato_depth: float = 0.0  # in semitones


@dataclass(frozen=True)
class SoundStyle:
    tempo_bpm: tuple[float, float]
    root_midi: tuple[int, int]  # range of the key's root note
    scale: tuple[int, ...]  # semitone offsets from the root
    lead: Timbre
    lead_octave: int  # octaves above the root
    notes_per_beat: float  # melody density
    chord_timbre: Timbre | None  # sustained chords under the melody, or none
    bass: Timbre | None
    kick: tuple[int, ...]  # active steps of a 16-step bar
    snare: tuple[int, ...]
    hat: tuple[int, ...]
    swing: float  # delay of off-beat 16ths, as a fraction of a step
    noise_bed: str | None  # an ambience in ``tools.demo.sound``
    noise_level: float


@dataclass(frozen=True)
class Category:
    name: str  # machine name, used as ``Item.category``
    label: str  # human-readable interest name
    type_weights: tuple[float, float, float]  # product, video, audio shares of its items
    vocab: Vocabulary
    visual: VisualStyle
    sound: SoundStyle


MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
DORIAN = (0, 2, 3, 5, 7, 9, 10)
PENTATONIC = (0, 2, 4, 7, 9)
MINOR_PENTATONIC = (0, 3, 5, 7, 10)

_PLUCK = Timbre((1.0, 0.5, 0.3, 0.15, 0.08), attack_s=0.005, decay_s=0.35)
_BELL = Timbre((1.0, 0.0, 0.4, 0.0, 0.25, 0.0, 0.1), attack_s=0.002, decay_s=0.5)
_SQUARE = Timbre((1.0, 0.0, 0.33, 0.0, 0.2, 0.0, 0.14, 0.0, 0.11), attack_s=0.003, decay_s=0.12)
_SAW = Timbre(tuple(1.0 / k for k in range(1, 13)), attack_s=0.01, decay_s=0.3)
_REED = Timbre((1.0, 0.6, 0.45, 0.3, 0.2, 0.12), attack_s=0.04, decay_s=0.8,
               vibrato_hz=5.0, vibrato_depth=0.15)
_STRINGS = Timbre(tuple(0.8 / k for k in range(1, 9)), attack_s=0.35, decay_s=2.5,
                  vibrato_hz=5.5, vibrato_depth=0.1)
_ORGAN = Timbre((1.0, 0.7, 0.0, 0.5), attack_s=0.05, decay_s=3.0)
_SUB_BASS = Timbre((1.0, 0.25), attack_s=0.005, decay_s=0.25)

CATEGORIES: tuple[Category, ...] = (
    Category(
        name="outdoor",
        label="Outdoor & hiking",
        type_weights=(0.5, 0.3, 0.2),
        vocab=Vocabulary(
            product_adjectives=("Lightweight", "Waterproof", "Ultralight", "Rugged", "Insulated",
                                "Packable", "Breathable", "All-season"),
            product_nouns=("trekking backpack", "camping tent", "hiking boots", "sleeping bag",
                           "trekking poles", "rain jacket", "headlamp", "water filter",
                           "camp stove"),
            video_topics=("Hiking the alpine lakes trail", "Pitching a tent in the rain",
                          "Packing a backpack for a three-day trek", "Finding your way with map and compass",
                          "Wild camping in the mountains", "Choosing hiking boots",
                          "Sunrise summit hike", "Leave no trace camping tips"),
            audio_moods=("Peaceful", "Warm", "Quiet", "Gentle", "Open-air"),
            audio_forms=("forest birdsong ambience", "campfire acoustic guitar",
                         "mountain stream soundscape", "folk songs for the trail",
                         "wind in the pines"),
            uses=("Built for long mountain hikes and weekend camping trips.",
                  "Made for hikers who spend their weekends on the trail.",
                  "A trusted companion for backpacking and wild camping.",
                  "Ready for rain, mud and rocky alpine paths."),
            features=("Water-resistant fabric and reinforced seams.",
                      "Weighs less than a kilogram and packs small.",
                      "Tested in wind, snow and summer heat.",
                      "Adjustable straps keep the load steady on steep climbs."),
            media_notes=("Filmed on misty mountain trails and lakeshores.",
                         "Birdsong, wind and the crackle of a campfire.",
                         "Fresh air and wide open views from the summit.",
                         "For anyone who dreams of the next hiking trip."),
            tags=("hiking", "camping", "outdoors", "trail", "mountains", "backpacking", "nature"),
        ),
        visual=VisualStyle(sky=(135, 190, 235), ground=(70, 120, 60),
                           palette=((60, 90, 50), (110, 80, 50), (240, 240, 245), (34, 139, 34)),
                           motif="mountains", texture="grain"),
        sound=SoundStyle(tempo_bpm=(66, 84), root_midi=(50, 57), scale=MAJOR, lead=_PLUCK,
                         lead_octave=1, notes_per_beat=1.0, chord_timbre=_PLUCK, bass=None,
                         kick=(), snare=(), hat=(), swing=0.0, noise_bed="wind", noise_level=0.12),
    ),
    Category(
        name="cooking",
        label="Cooking & kitchen",
        type_weights=(0.5, 0.35, 0.15),
        vocab=Vocabulary(
            product_adjectives=("Cast-iron", "Non-stick", "Stainless steel", "Handmade", "Ceramic",
                                "Professional", "Copper", "Bamboo"),
            product_nouns=("frying pan", "chef's knife", "cutting board", "dutch oven", "spice rack",
                           "mixing bowl set", "pasta maker", "coffee grinder", "baking tray"),
            video_topics=("Making fresh pasta at home", "How to sharpen a chef's knife",
                          "Five quick weeknight dinners", "Baking sourdough bread",
                          "Perfect risotto step by step", "Homemade pizza dough",
                          "Knife skills for beginners", "Spicy Thai curry recipe"),
            audio_moods=("Cozy", "Relaxed", "Sunny", "Easygoing", "Bright"),
            audio_forms=("cooking podcast", "bossa nova dinner music", "cafe kitchen playlist",
                         "Italian trattoria songs", "recipe radio show"),
            uses=("Made for home cooks who love to try new recipes.",
                  "A kitchen essential for everyday cooking and baking.",
                  "Great for family dinners and weekend baking.",
                  "Brings restaurant-style results to your kitchen."),
            features=("Heats evenly and is easy to clean.",
                      "Dishwasher safe and built to last for years.",
                      "Comfortable grip for precise chopping and slicing.",
                      "Works on gas, electric and induction hobs."),
            media_notes=("Simple recipes with fresh ingredients.",
                         "The sizzle of the pan and the smell of fresh bread.",
                         "Tips from a professional chef for home cooks.",
                         "Delicious food for family dinners."),
            tags=("cooking", "kitchen", "recipes", "food", "baking", "chef", "dinner"),
        ),
        visual=VisualStyle(sky=(250, 235, 210), ground=(200, 80, 60),
                           palette=((220, 60, 40), (250, 160, 50), (250, 250, 240), (120, 70, 40)),
                           motif="plates", texture="checker"),
        sound=SoundStyle(tempo_bpm=(96, 112), root_midi=(55, 62), scale=MAJOR, lead=_PLUCK,
                         lead_octave=1, notes_per_beat=1.5, chord_timbre=_PLUCK, bass=_SUB_BASS,
                         kick=(0, 8), snare=(), hat=(2, 6, 10, 14), swing=0.0,
                         noise_bed="sizzle", noise_level=0.1),
    ),
    Category(
        name="electronics",
        label="Electronics & gadgets",
        type_weights=(0.55, 0.3, 0.15),
        vocab=Vocabulary(
            product_adjectives=("Wireless", "Smart", "Portable", "Noise-cancelling", "Rechargeable",
                                "4K", "Compact", "Bluetooth"),
            product_nouns=("headphones", "smartwatch", "laptop stand", "mechanical keyboard",
                           "power bank", "action camera", "smart speaker", "USB-C hub", "drone"),
            video_topics=("Unboxing the newest smartphone", "Building a gaming PC",
                          "Best budget wireless earbuds", "Smart home setup guide",
                          "Laptop buying guide", "Soldering for beginners",
                          "Drone flying tips", "Mechanical keyboard review"),
            audio_moods=("Retro", "Futuristic", "Glitchy", "Digital", "Upbeat"),
            audio_forms=("chiptune arcade theme", "tech news podcast", "8-bit game soundtrack",
                         "synthwave gadget review intro", "gadget talk show"),
            uses=("Designed for people who love the latest gadgets.",
                  "A smart upgrade for your desk, home or travel bag.",
                  "Pairs instantly with your phone and laptop.",
                  "Built for work, gaming and streaming."),
            features=("Long battery life and fast USB-C charging.",
                      "Firmware updates add new features over time.",
                      "Low-latency wireless connection.",
                      "Aluminium body with a clean minimalist design."),
            media_notes=("Hands-on look at the latest gadgets and tech.",
                         "Honest reviews of phones, laptops and smart devices.",
                         "Bleeps, blips and retro video game sounds.",
                         "For tech lovers and gamers."),
            tags=("electronics", "gadgets", "tech", "wireless", "smart home", "gaming", "devices"),
        ),
        visual=VisualStyle(sky=(25, 28, 38), ground=(50, 55, 70),
                           palette=((0, 220, 255), (40, 40, 45), (180, 190, 200), (0, 255, 140)),
                           motif="devices", texture="grid"),
        sound=SoundStyle(tempo_bpm=(118, 132), root_midi=(57, 64), scale=MINOR_PENTATONIC,
                         lead=_SQUARE, lead_octave=1, notes_per_beat=4.0, chord_timbre=None,
                         bass=_SQUARE, kick=(0, 4, 8, 12), snare=(4, 12), hat=tuple(range(0, 16, 2)),
                         swing=0.0, noise_bed=None, noise_level=0.0),
    ),
    Category(
        name="jazz",
        label="Jazz",
        type_weights=(0.2, 0.25, 0.55),
        vocab=Vocabulary(
            product_adjectives=("Vintage", "Limited edition", "Classic", "Remastered", "Brass",
                                "Hand-lacquered", "Deluxe", "Collector's"),
            product_nouns=("jazz vinyl record", "tenor saxophone", "trumpet mouthpiece",
                           "double bass strings", "jazz piano songbook", "saxophone reeds",
                           "record player", "jazz club poster"),
            video_topics=("Live jazz trio at a late-night club", "Learning bebop saxophone licks",
                          "Walking bass lines explained", "Jazz piano voicings lesson",
                          "The history of swing", "Improvising over blues changes",
                          "Big band rehearsal session", "Miles Davis style trumpet solo"),
            audio_moods=("Smooth", "Late-night", "Swinging", "Mellow", "Smoky", "Cool"),
            audio_forms=("saxophone jazz trio", "bebop piano standard", "walking bass groove",
                         "jazz quartet ballad", "swing big band tune", "trumpet jazz improvisation"),
            uses=("For listeners who love smoky clubs and improvised solos.",
                  "A treat for jazz fans and musicians alike.",
                  "Evokes the golden age of swing and bebop.",
                  "Perfect for a late evening with a glass of wine."),
            features=("Warm saxophone tone over brushed drums.",
                      "Recorded live with upright bass and piano.",
                      "Rich swing rhythm and blue notes.",
                      "Crafted for players of every level."),
            media_notes=("Smooth saxophone over a swinging rhythm section.",
                         "Improvised solos, walking bass and brushed drums.",
                         "Recorded live in a late-night jazz club.",
                         "Bebop, swing and blue notes."),
            tags=("jazz", "saxophone", "swing", "bebop", "trumpet", "blues", "improvisation"),
        ),
        visual=VisualStyle(sky=(20, 25, 60), ground=(90, 20, 40),
                           palette=((212, 175, 55), (15, 15, 20), (150, 30, 50), (230, 200, 120)),
                           motif="vinyl", texture="grain"),
        sound=SoundStyle(tempo_bpm=(120, 150), root_midi=(48, 55), scale=DORIAN, lead=_REED,
                         lead_octave=2, notes_per_beat=2.0, chord_timbre=_ORGAN, bass=_SUB_BASS,
                         kick=(), snare=(), hat=(0, 4, 6, 8, 12, 14), swing=0.33,
                         noise_bed=None, noise_level=0.0),
    ),
    Category(
        name="edm",
        label="Electronic dance music",
        type_weights=(0.2, 0.3, 0.5),
        vocab=Vocabulary(
            product_adjectives=("Pro", "Neon", "Portable", "Club-ready", "LED", "Studio",
                                "Compact", "High-output"),
            product_nouns=("DJ controller", "party speaker", "synthesizer", "drum machine",
                           "studio monitors", "festival wristband", "MIDI keyboard", "DJ headphones"),
            video_topics=("Festival main stage DJ set", "Making a house track from scratch",
                          "Beatmatching for beginner DJs", "Sound design for techno bass",
                          "Warehouse rave highlights", "Building a drop in trance music",
                          "Live modular synth jam", "Club lighting behind the scenes"),
            audio_moods=("Euphoric", "Driving", "Pumping", "Hypnotic", "Energetic", "Late-night"),
            audio_forms=("house music mix", "techno club track", "trance anthem",
                         "dance floor remix", "electro house banger", "deep house groove"),
            uses=("Made for dance floors, festivals and late-night club sets.",
                  "For DJs and producers who live for the drop.",
                  "Keeps the party going until sunrise.",
                  "Built for bass-heavy electronic music."),
            features=("Punchy kick drum and pulsing synth bass.",
                      "Four-on-the-floor rhythm at 128 beats per minute.",
                      "Bright neon lights that sync to the beat.",
                      "Huge sound with deep sub bass."),
            media_notes=("Pounding kick drums and pulsing synth bass.",
                         "Big drops and euphoric festival energy.",
                         "A DJ set from the heart of the club.",
                         "House and techno for the dance floor."),
            tags=("edm", "dance", "house", "techno", "dj", "festival", "club"),
        ),
        visual=VisualStyle(sky=(40, 0, 70), ground=(10, 0, 30),
                           palette=((255, 0, 200), (0, 255, 255), (140, 60, 255), (255, 255, 80)),
                           motif="equalizer", texture="stripes"),
        sound=SoundStyle(tempo_bpm=(124, 130), root_midi=(45, 52), scale=MINOR, lead=_SAW,
                         lead_octave=2, notes_per_beat=2.0, chord_timbre=_SAW, bass=_SAW,
                         kick=(0, 4, 8, 12), snare=(4, 12), hat=(2, 6, 10, 14), swing=0.0,
                         noise_bed=None, noise_level=0.0),
    ),
    Category(
        name="classical",
        label="Classical music",
        type_weights=(0.2, 0.25, 0.55),
        vocab=Vocabulary(
            product_adjectives=("Handcrafted", "Concert", "Urtext", "Antique", "Spruce-top",
                                "Student", "Full-size", "Baroque"),
            product_nouns=("violin", "cello bow", "piano sheet music", "music stand", "metronome",
                           "classical guitar", "symphony box set", "opera glasses"),
            video_topics=("Orchestra performs a Beethoven symphony", "Violin masterclass on Bach",
                          "Learning a Chopin nocturne", "Inside a string quartet rehearsal",
                          "Opera aria in concert", "How to read an orchestral score",
                          "Mozart piano sonata performance", "Conducting basics"),
            audio_moods=("Serene", "Majestic", "Graceful", "Romantic", "Elegant"),
            audio_forms=("string quartet", "piano sonata", "symphony movement", "violin concerto",
                         "baroque chamber music", "orchestral adagio"),
            uses=("For lovers of orchestras, concert halls and timeless composers.",
                  "Ideal for students and concert musicians.",
                  "Brings the elegance of the concert hall home.",
                  "Music from Bach, Mozart and Beethoven."),
            features=("Rich strings and a wide orchestral sound.",
                      "Finely carved from seasoned wood.",
                      "Slow tempo with expressive dynamics.",
                      "Edited from the composer's original manuscript."),
            media_notes=("Strings, piano and a full symphony orchestra.",
                         "Timeless music by Bach, Mozart and Beethoven.",
                         "Performed live in a grand concert hall.",
                         "Graceful melodies and rich harmonies."),
            tags=("classical", "orchestra", "violin", "piano", "symphony", "opera", "concert"),
        ),
        visual=VisualStyle(sky=(250, 245, 225), ground=(120, 80, 45),
                           palette=((25, 20, 15), (140, 90, 40), (250, 250, 245), (180, 150, 90)),
                           motif="staff", texture="none"),
        sound=SoundStyle(tempo_bpm=(60, 80), root_midi=(55, 62), scale=MAJOR, lead=_STRINGS,
                         lead_octave=1, notes_per_beat=1.0, chord_timbre=_STRINGS, bass=None,
                         kick=(), snare=(), hat=(), swing=0.0, noise_bed=None, noise_level=0.0),
    ),
    Category(
        name="fitness",
        label="Fitness & workout",
        type_weights=(0.5, 0.35, 0.15),
        vocab=Vocabulary(
            product_adjectives=("Adjustable", "Heavy-duty", "Non-slip", "Foldable", "Sweat-proof",
                                "Resistance", "Premium", "Ergonomic"),
            product_nouns=("dumbbell set", "yoga mat", "kettlebell", "resistance bands",
                           "running shoes", "jump rope", "foam roller", "pull-up bar", "protein shaker"),
            video_topics=("Twenty-minute HIIT workout", "Full-body strength training",
                          "Morning yoga flow", "Marathon training plan", "Core workout for beginners",
                          "Kettlebell swing technique", "Stretching after a run",
                          "Home gym leg day"),
            audio_moods=("High-energy", "Motivational", "Intense", "Powerful", "Fast"),
            audio_forms=("workout mix", "running cadence beats", "gym motivation playlist",
                         "cardio training music", "spin class soundtrack"),
            uses=("Built for home workouts, gym sessions and training plans.",
                  "Helps you stay strong, fit and motivated.",
                  "Made for runners, lifters and yoga lovers.",
                  "Push harder on every rep and every mile."),
            features=("Durable grip that will not slip when you sweat.",
                      "Adjustable resistance for every fitness level.",
                      "Folds flat to store in a small apartment.",
                      "Fast tempo to keep your heart rate up."),
            media_notes=("Fast beats to power your workout.",
                         "Keeps your heart rate up from warm-up to cool-down.",
                         "Coached by a personal trainer.",
                         "Strength, cardio and stretching for every level."),
            tags=("fitness", "workout", "gym", "training", "running", "yoga", "strength"),
        ),
        visual=VisualStyle(sky=(240, 240, 240), ground=(30, 30, 30),
                           palette=((230, 30, 30), (20, 20, 20), (255, 210, 0), (90, 90, 90)),
                           motif="dumbbells", texture="stripes"),
        sound=SoundStyle(tempo_bpm=(148, 165), root_midi=(45, 52), scale=MINOR_PENTATONIC,
                         lead=_SAW, lead_octave=1, notes_per_beat=1.0, chord_timbre=None,
                         bass=_SUB_BASS, kick=(0, 4, 8, 10, 12), snare=(4, 12), hat=tuple(range(16)),
                         swing=0.0, noise_bed=None, noise_level=0.0),
    ),
    Category(
        name="kids",
        label="Kids & toys",
        type_weights=(0.5, 0.3, 0.2),
        vocab=Vocabulary(
            product_adjectives=("Colorful", "Wooden", "Educational", "Soft", "Musical",
                                "Magnetic", "Cuddly", "Giant"),
            product_nouns=("building blocks", "teddy bear", "toy train set", "puzzle for toddlers",
                           "dollhouse", "xylophone toy", "picture book", "ride-on scooter",
                           "crayon set"),
            video_topics=("Nursery rhymes for toddlers", "Cartoon animals learn colors",
                          "Building a block castle", "Counting songs for kids",
                          "Toy train adventure", "Bedtime story for children",
                          "Easy crafts for preschoolers", "Alphabet song with puppets"),
            audio_moods=("Playful", "Happy", "Sleepy", "Cheerful", "Silly"),
            audio_forms=("nursery rhyme sing-along", "music box lullaby", "children's songs",
                         "bedtime story", "toddler dance song"),
            uses=("Made for toddlers and young children to play and learn.",
                  "Hours of fun for kids at home or in preschool.",
                  "A favorite gift for birthdays and holidays.",
                  "Sparks imagination in little ones."),
            features=("Safe, non-toxic paint and rounded edges.",
                      "Bright colors and friendly cartoon animals.",
                      "Helps children learn numbers, letters and colors.",
                      "Soft enough for bedtime cuddles."),
            media_notes=("Bright cartoon colors and friendly animal characters.",
                         "Sing along with simple rhymes and counting games.",
                         "Gentle music box tunes for bedtime.",
                         "Fun learning for toddlers and preschool children."),
            tags=("kids", "toys", "children", "toddler", "family", "learning", "play"),
        ),
        visual=VisualStyle(sky=(255, 240, 120), ground=(120, 200, 255),
                           palette=((255, 60, 60), (60, 140, 255), (60, 200, 80), (255, 160, 0)),
                           motif="balloons", texture="dots"),
        sound=SoundStyle(tempo_bpm=(100, 118), root_midi=(60, 67), scale=PENTATONIC, lead=_BELL,
                         lead_octave=1, notes_per_beat=2.0, chord_timbre=None, bass=_SUB_BASS,
                         kick=(0, 8), snare=(), hat=(), swing=0.0, noise_bed=None, noise_level=0.0),
    ),
)

CATEGORY_NAMES: tuple[str, ...] = tuple(c.name for c in CATEGORIES)
CATEGORY_BY_NAME: dict[str, Category] = {c.name: c for c in CATEGORIES}
